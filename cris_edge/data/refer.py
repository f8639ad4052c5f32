"""RefCOCO, RefCOCO+ and G-Ref in the refer format, laid out as CRIS.pytorch's tools expect.

    <data_root>/<dataset>/refs(<split_by>).p    pickle: list of refs (ref_id, ann_id, image_id,
                                                split, sentences[{sent, raw, tokens, sent_id}],
                                                category_id, file_name ...)
    <data_root>/<dataset>/instances.json        COCO-style images, annotations, categories
    <data_root>/images/train2014/<file_name>    the COCO train2014 images

``split_by`` is ``unc`` for refcoco and refcoco+, ``umd`` or ``google`` for refcocog (the
names ``refcocog_u`` / ``refcocog_g`` of the official configs select those). Splits: train,
val, testA, testB (refcoco, refcoco+), test (refcocog umd). A referent's mask is the union of
its COCO annotation's polygons (or its RLE), decoded with pycocotools at the image's size.

``refs(...).p`` is a pickle, the format's own file: it is read with an unpickler that accepts
plain data only (see `load_data_pickle`), never code.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .records import DatasetError, PathLike, ReferRecord, decode_image, load_data_pickle, read_bytes

#: dataset -> the split_by values it comes with (the first is the default).
SPLIT_BY = {"refcoco": ("unc",), "refcoco+": ("unc",), "refcocog": ("umd", "google")}
#: Names used by the official configs for the two G-Ref partitions.
ALIASES = {"refcocog_u": ("refcocog", "umd"), "refcocog_g": ("refcocog", "google")}
SPLITS = ("train", "val", "testA", "testB", "test")


def resolve_dataset(dataset: str, split_by: str | None = None) -> tuple[str, str]:
    """``(dataset, split_by)`` from a name (``refcoco``, ``refcocog_u`` ...) and an optional split_by."""
    if dataset in ALIASES:
        name, implied = ALIASES[dataset]
        if split_by not in (None, implied):
            raise ValueError(f"dataset {dataset!r} implies split_by={implied!r}, got {split_by!r}")
        return name, implied
    if dataset not in SPLIT_BY:
        raise ValueError(f"unknown refer dataset {dataset!r}; expected one of "
                         f"{sorted(SPLIT_BY) + sorted(ALIASES)}")
    split_by = split_by or SPLIT_BY[dataset][0]
    if split_by not in SPLIT_BY[dataset]:
        raise ValueError(f"{dataset} comes with split_by {SPLIT_BY[dataset]}, got {split_by!r}")
    return dataset, split_by


def in_split(ref_split: str, split: str) -> bool:
    """Whether a ref whose ``split`` field is ``ref_split`` belongs to ``split`` (refer's rules:
    testA takes every test split naming A, such as testAB; test takes every test split)."""
    if split in ("testA", "testB", "testC"):
        return ref_split.startswith("test") and split[-1] in ref_split[4:]
    if split == "test":
        return ref_split.startswith("test")
    return ref_split == split


def annotation_mask(segmentation, height: int, width: int, source: str) -> np.ndarray:
    """COCO ``segmentation`` (polygon list, uncompressed or compressed RLE) -> uint8 ``[H, W]``
    in {0, 1}: the union of its parts."""
    from pycocotools import mask as coco_mask

    try:
        if isinstance(segmentation, list) or isinstance(segmentation.get("counts"), list):
            rles = coco_mask.frPyObjects(segmentation, height, width)
        else:
            counts = segmentation["counts"]
            rles = {"size": segmentation["size"],
                    "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
        decoded = coco_mask.decode(rles)
    except Exception as err:  # pycocotools raises TypeError, ValueError, KeyError ...
        raise DatasetError(f"{source}: cannot decode segmentation: {err}") from None
    if decoded.ndim == 3:
        decoded = decoded.any(axis=2)
    return decoded.astype(np.uint8)


class ReferDataset(Sequence):
    """The referents of one split, item ``i`` a `ReferRecord` (image, mask, every sentence).

    Indexes are checked when the dataset is made (a missing refs/instances file, or a ref whose
    annotation or image is absent from instances.json, is a `DatasetError` naming the file);
    images are read when an item is read.
    """

    def __init__(self, data_root: PathLike, dataset: str = "refcoco", split: str = "val",
                 split_by: str | None = None):
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        self.dataset, self.split_by = resolve_dataset(dataset, split_by)
        self.split = split
        root = Path(data_root)
        self.refs_path = root / self.dataset / f"refs({self.split_by}).p"
        self.instances_path = root / self.dataset / "instances.json"
        self.image_dir = root / "images" / "train2014"
        refs = load_data_pickle(read_bytes(self.refs_path, "refs file"), str(self.refs_path))
        if not isinstance(refs, list):
            raise DatasetError(f"{self.refs_path}: expected a list of refs, got {type(refs).__name__}")
        instances = self._load_instances()
        self.images = {img["id"]: img for img in instances["images"]}
        self.anns = {ann["id"]: ann for ann in instances["annotations"]}
        category_ids = sorted(cat["id"] for cat in instances["categories"])
        #: COCO category id -> contiguous index 0..79, the ``cat`` of CRIS.pytorch's LMDB entries
        self.category_index = {cid: i for i, cid in enumerate(category_ids)}
        try:
            self.refs = [ref for ref in refs if in_split(ref["split"], split)]
            for ref in self.refs:
                if ref["ann_id"] not in self.anns or ref["image_id"] not in self.images:
                    raise DatasetError(f"{self.refs_path}: ref {ref['ref_id']} names annotation "
                                       f"{ref['ann_id']} / image {ref['image_id']}, absent from "
                                       f"{self.instances_path}")
        except (KeyError, TypeError) as err:
            raise DatasetError(f"{self.refs_path}: malformed ref entry ({err!r} missing or wrong type)") from None
        if not self.refs:
            raise DatasetError(f"{self.refs_path}: no refs in split {split!r}")
        if not self.image_dir.is_dir():
            raise DatasetError(f"image folder not found: {self.image_dir}")

    def _load_instances(self) -> dict:
        try:
            instances = json.loads(read_bytes(self.instances_path, "instances file"))
        except json.JSONDecodeError as err:
            raise DatasetError(f"corrupt JSON in {self.instances_path}: {err}") from None
        missing = [k for k in ("images", "annotations", "categories") if k not in instances]
        if missing:
            raise DatasetError(f"{self.instances_path}: missing section(s) {missing}")
        return instances

    def __len__(self) -> int:
        return len(self.refs)

    def image_path(self, i: int) -> Path:
        """Path of item ``i``'s image."""
        return self.image_dir / self.images[self.refs[i]["image_id"]]["file_name"]

    def sentences(self, i: int) -> list[str]:
        """Item ``i``'s sentences (the ``sent`` field, stripped, as CRIS.pytorch's tools)."""
        return [s["sent"].strip() for s in self.refs[i]["sentences"]]

    def mask(self, i: int) -> np.ndarray:
        """Item ``i``'s mask, uint8 ``[H, W]`` in {0, 1} at its image's size."""
        ref = self.refs[i]
        image = self.images[ref["image_id"]]
        source = f"{self.instances_path} (annotation {ref['ann_id']})"
        return annotation_mask(self.anns[ref["ann_id"]]["segmentation"], image["height"],
                               image["width"], source)

    def category(self, i: int) -> int:
        """Item ``i``'s category as a contiguous index (0..79 for COCO)."""
        return self.category_index[self.refs[i]["category_id"]]

    def __getitem__(self, i: int) -> ReferRecord:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} refs")
        i %= len(self)
        path = self.image_path(i)
        image = decode_image(read_bytes(path, "image"), str(path))
        mask = self.mask(i)
        if mask.shape != image.shape[:2]:
            raise DatasetError(f"{path}: image is {image.shape[:2]} but {self.instances_path} "
                               f"says {mask.shape}")
        return ReferRecord(image, mask, self.sentences(i), int(self.refs[i]["ref_id"]), self.category(i))
