"""Write tiny datasets in the real on-disk formats from synthetic scenes (test helpers).

`write_refer` lays out the refer format as RefCOCO's release does (a Python-2-style protocol-2
pickle of refs, a COCO instances.json with polygon, compressed-RLE and uncompressed-RLE
segmentations, JPEG images); `write_official_lmdb` writes an LMDB the way CRIS.pytorch's
``folder2lmdb.py`` does (pickle protocol 5, ``subdir=False``).
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import cv2
import lmdb
import numpy as np
from pycocotools import mask as coco_mask

from cris_edge.data.synthetic import SyntheticConfig, make_sample

SMALL = SyntheticConfig(height=60, width=80, max_objects=3)
#: COCO-like category ids with gaps, so the contiguous index differs from the id.
CATEGORY_IDS = (1, 3, 13, 90)
SPLIT_CYCLE = ("train", "val", "testA", "testB", "val")


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO uncompressed RLE (column-major run lengths, starting with a run of zeros)."""
    flat = np.asarray(mask, np.uint8).flatten(order="F")
    edges = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], edges, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts = [0] + counts
    return {"size": list(mask.shape), "counts": counts}


def outer_polygons(mask: np.ndarray) -> list[list[float]]:
    """The mask's outer contours as COCO polygons ``[x0, y0, x1, y1, ...]`` (pixel centres)."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    return [c.reshape(-1).astype(float).tolist() for c in contours if len(c) >= 3]


def segmentation(mask: np.ndarray, kind: str):
    """``mask`` as a COCO segmentation of ``kind``: polygon, rle (compressed) or rle_list."""
    if kind == "polygon":
        return outer_polygons(mask)
    if kind == "rle":
        rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
        return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
    return uncompressed_rle(mask)


def write_refer(root: Path, n: int = 6, dataset: str = "refcoco", split_by: str = "unc",
                seed: int = 0, kinds=("rle", "rle_list", "polygon")) -> list:
    """Write ``n`` synthetic scenes as a refer-format dataset under ``root``; returns the
    samples (ref ``i`` = sample ``i``, split ``SPLIT_CYCLE[i % 5]``, annotation kind
    ``kinds[i % len(kinds)]``)."""
    images_dir = root / "images" / "train2014"
    images_dir.mkdir(parents=True, exist_ok=True)
    (root / dataset).mkdir(parents=True, exist_ok=True)
    samples, images, annotations, refs = [], [], [], []
    for i in range(n):
        sample = make_sample(seed + i, SMALL)
        samples.append(sample)
        name = f"COCO_train2014_{i:012d}.jpg"
        cv2.imwrite(str(images_dir / name), sample.image)
        h, w = sample.mask.shape
        images.append({"id": 100 + i, "file_name": name, "height": h, "width": w})
        cat = CATEGORY_IDS[i % len(CATEGORY_IDS)]
        annotations.append({"id": 1000 + i, "image_id": 100 + i, "category_id": cat, "iscrowd": 0,
                            "segmentation": segmentation(sample.mask, kinds[i % len(kinds)]),
                            "area": int(sample.mask.sum()), "bbox": [0, 0, w, h]})
        refs.append({"ref_id": 10 + i, "ann_id": 1000 + i, "image_id": 100 + i,
                     "split": SPLIT_CYCLE[i % len(SPLIT_CYCLE)], "category_id": cat, "file_name": name,
                     "sentences": [{"sent": f" {s} ", "raw": s, "tokens": s.split(), "sent_id": 50 * i + k}
                                   for k, s in enumerate(sample.sentences[:3])]})
    categories = [{"id": c, "name": f"cat{c}", "supercategory": "x"} for c in CATEGORY_IDS]
    (root / dataset / "instances.json").write_text(json.dumps(
        {"images": images, "annotations": annotations, "categories": categories}))
    with open(root / dataset / f"refs({split_by}).p", "wb") as handle:
        pickle.dump(refs, handle, protocol=2)
    return samples


def write_official_lmdb(path: Path, samples: list) -> None:
    """An LMDB as CRIS.pytorch's folder2lmdb.py writes it: pickle protocol 5, one file."""
    env = lmdb.open(str(path), subdir=False, map_size=1 << 26)
    keys = []
    with env.begin(write=True) as txn:
        for i, sample in enumerate(samples):
            ok_img, img = cv2.imencode(".jpg", sample.image)
            ok_mask, mask = cv2.imencode(".png", sample.mask * 255)
            entry = {"img": img.tobytes(), "mask": mask.tobytes(), "cat": 0, "seg_id": i,
                     "img_name": f"{i}.jpg", "num_sents": len(sample.sentences), "sents": sample.sentences}
            key = str(i).encode("ascii")
            keys.append(key)
            txn.put(key, pickle.dumps(entry, protocol=5))
        txn.put(b"__keys__", pickle.dumps(keys, protocol=5))
        txn.put(b"__len__", pickle.dumps(len(keys), protocol=5))
    env.close()


def rewrite_refer(root: Path, mutate, dataset: str = "refcoco", split_by: str = "unc") -> None:
    """Rewrite a refer dataset written by `write_refer` through ``mutate(refs, instances) ->
    (refs, instances)``: the refs pickle (protocol 2) and instances.json in their real formats."""
    refs_path, instances_path = root / dataset / f"refs({split_by}).p", root / dataset / "instances.json"
    with open(refs_path, "rb") as handle:
        refs = pickle.load(handle)
    refs, instances = mutate(refs, json.loads(instances_path.read_text()))
    instances_path.write_text(json.dumps(instances))
    with open(refs_path, "wb") as handle:
        pickle.dump(refs, handle, protocol=2)


def lmdb_entry(sample, index: int = 0) -> dict:
    """One entry of the official layout (as folder2lmdb.py writes it) for a synthetic sample."""
    ok_img, img = cv2.imencode(".jpg", sample.image)
    ok_mask, mask = cv2.imencode(".png", sample.mask * 255)
    return {"img": img.tobytes(), "mask": mask.tobytes(), "cat": 0, "seg_id": index,
            "img_name": f"{index}.jpg", "num_sents": len(sample.sentences), "sents": list(sample.sentences)}


def write_raw_lmdb(path: Path, values: dict, protocol: int = 5) -> None:
    """An LMDB file (``subdir=False``) holding ``values``: key (bytes) -> object, pickled with
    ``protocol`` unless it is already bytes (then stored as is)."""
    env = lmdb.open(str(path), subdir=False, map_size=1 << 26)
    with env.begin(write=True) as txn:
        for key, value in values.items():
            txn.put(key, value if isinstance(value, bytes) else pickle.dumps(value, protocol=protocol))
    env.close()
