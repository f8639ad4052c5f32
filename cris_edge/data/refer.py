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

    size = segmentation.get("size") if isinstance(segmentation, dict) else None
    if isinstance(segmentation, dict) and not (isinstance(size, (list, tuple)) and list(size) == [height, width]):
        # an RLE is decoded at its own size: one that is not the image's is an error (and a
        # hostile one could ask for any amount of memory)
        raise DatasetError(f"{source}: RLE size {segmentation.get('size')!r} is not the image's "
                           f"[{height}, {width}]")
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


#: The largest image side instances.json may state: masks are decoded at that size before the
#: image is (``cris-prepare`` never decodes images), so a hostile size could ask for terabytes.
#: COCO's largest side is 640.
MAX_SIDE = 1 << 14


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _show(value) -> str:
    text = repr(value)
    return f"{text[:50]}{'...' if len(text) > 50 else ''} ({type(value).__name__})"


def _get(item, name: str, check, expected: str, source: str, what: str):
    """``item[name]`` after checking that ``item`` is a dict holding it and ``check(value)``;
    otherwise a `DatasetError` naming ``source``, ``what`` and the field."""
    if not isinstance(item, dict):
        raise DatasetError(f"{source}: {what} must be a dict, got {_show(item)}")
    if name not in item:
        raise DatasetError(f"{source}: {what} has no {name!r} field")
    value = item[name]
    if not check(value):
        raise DatasetError(f"{source}: {what}: {name!r} must be {expected}, got {_show(value)}")
    return value


def _is_file_name(value) -> bool:
    """A plain file name: a COCO image never names a folder, so nothing outside the image
    folder can be read through it."""
    return isinstance(value, str) and value not in ("", ".", "..") and "/" not in value \
        and "\\" not in value and "\0" not in value


class ReferDataset(Sequence):
    """The referents of one split, item ``i`` a `ReferRecord` (image, mask, every sentence).

    Indexes are checked when the dataset is made: a missing or malformed refs/instances file,
    a ref of the split with a missing or mistyped field, no sentence or a blank one, or whose
    annotation, image or category is absent from instances.json, is a `DatasetError` naming the
    file and the ref; images are read when an item is read.
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
        self.images = self._index(instances["images"], "image", self._check_image)
        self.anns = self._index(instances["annotations"], "annotation", self._check_annotation)
        categories = self._index(instances["categories"], "category", lambda item, what: None)
        #: COCO category id -> contiguous index 0..79, the ``cat`` of CRIS.pytorch's LMDB entries
        self.category_index = {cid: i for i, cid in enumerate(sorted(categories))}
        source = str(self.refs_path)
        self.refs = []
        for n, ref in enumerate(refs):
            ref_split = _get(ref, "split", lambda v: isinstance(v, str), "a str", source, f"ref #{n}")
            if in_split(ref_split, split):
                self._check_ref(ref, n)
                self.refs.append(ref)
        if not self.refs:
            raise DatasetError(f"{self.refs_path}: no refs in split {split!r}")
        self._annotations_by_image: dict | None = None
        if not self.image_dir.is_dir():
            raise DatasetError(f"image folder not found: {self.image_dir}")

    def _load_instances(self) -> dict:
        try:
            instances = json.loads(read_bytes(self.instances_path, "instances file"))
        except (ValueError, RecursionError) as err:  # JSONDecodeError, UnicodeDecodeError, too deep
            raise DatasetError(f"corrupt JSON in {self.instances_path}: {err}") from None
        if not isinstance(instances, dict):
            raise DatasetError(f"{self.instances_path}: expected a COCO instances object with images, "
                               f"annotations and categories, got {_show(instances)}")
        missing = [k for k in ("images", "annotations", "categories") if k not in instances]
        if missing:
            raise DatasetError(f"{self.instances_path}: missing section(s) {missing}")
        for section in ("images", "annotations", "categories"):
            if not isinstance(instances[section], list):
                raise DatasetError(f"{self.instances_path}: {section!r} must be a list, "
                                   f"got {_show(instances[section])}")
        return instances

    def _index(self, items: list, what: str, check) -> dict:
        """``{id: item}`` of an instances.json section, each item checked."""
        source, index = str(self.instances_path), {}
        for n, item in enumerate(items):
            item_id = _get(item, "id", _is_int, "an int", source, f"{what} #{n}")
            check(item, f"{what} {item_id}")
            index[item_id] = item
        return index

    def _check_image(self, image: dict, what: str) -> None:
        source = str(self.instances_path)
        _get(image, "file_name", _is_file_name, "a plain file name", source, what)
        for name in ("height", "width"):
            _get(image, name, lambda v: _is_int(v) and 0 < v <= MAX_SIDE, f"an int in [1, {MAX_SIDE}]",
                 source, what)

    def _check_annotation(self, ann: dict, what: str) -> None:
        _get(ann, "segmentation", lambda v: isinstance(v, (list, dict)), "a polygon list or an RLE dict",
             str(self.instances_path), what)

    def _check_ref(self, ref: dict, n: int) -> None:
        """Every field of a ref of this split that reading it uses."""
        source = str(self.refs_path)
        ref_id = _get(ref, "ref_id", _is_int, "an int", source, f"ref #{n}")
        what = f"ref {ref_id}"
        for name, index, section in (("ann_id", self.anns, "annotation"), ("image_id", self.images, "image"),
                                     ("category_id", self.category_index, "category")):
            value = _get(ref, name, _is_int, "an int", source, what)
            if value not in index:
                raise DatasetError(f"{source}: {what} names {section} {value} ({name}), absent from "
                                   f"{self.instances_path}")
        sentences = _get(ref, "sentences", lambda v: isinstance(v, list), "a list", source, what)
        if not sentences:
            raise DatasetError(f"{source}: {what} has no sentences")
        for k, sentence in enumerate(sentences):
            sent = _get(sentence, "sent", lambda v: isinstance(v, str), "a str", source, f"{what} sentence {k}")
            if not sent.strip():
                raise DatasetError(f"{source}: {what} sentence {k}: 'sent' is blank")

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

    def image_info(self, i: int) -> dict:
        """Item ``i``'s image entry of instances.json (``id``, ``file_name``, ``height``, ``width``)."""
        return self.images[self.refs[i]["image_id"]]

    def instance_masks(self, i: int) -> list[np.ndarray]:
        """uint8 ``[H, W]`` masks in {0, 1} of every COCO annotation of item ``i``'s image, the
        referent's among them (the instance masks that zero-shot evaluation's oracle proposals are)."""
        if self._annotations_by_image is None:
            self._annotations_by_image = {}
            for ann_id, ann in self.anns.items():
                self._annotations_by_image.setdefault(ann.get("image_id"), []).append(ann_id)
        image = self.image_info(i)
        return [annotation_mask(self.anns[a]["segmentation"], image["height"], image["width"],
                                f"{self.instances_path} (annotation {a})")
                for a in self._annotations_by_image.get(image["id"], [])]

    def category(self, i: int) -> int:
        """Item ``i``'s category as a contiguous index (0..79 for COCO)."""
        return self.category_index[self.refs[i]["category_id"]]

    def __getitem__(self, i: int) -> ReferRecord:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} refs")
        i %= len(self)
        path = self.image_path(i)
        image = decode_image(read_bytes(path, "image"), str(path))
        info = self.images[self.refs[i]["image_id"]]
        if (info["height"], info["width"]) != image.shape[:2]:  # before a mask of that size is made
            raise DatasetError(f"{path}: image is {image.shape[:2]} but {self.instances_path} "
                               f"says {(info['height'], info['width'])}")
        mask = self.mask(i)
        return ReferRecord(image, mask, self.sentences(i), int(self.refs[i]["ref_id"]), self.category(i))
