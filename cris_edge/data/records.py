"""What every dataset format yields, and the file helpers they share (numpy + OpenCV, no torch).

A *record* is one referent: an image, the referent's mask at the image's own size and every
sentence that refers to it. The refer format, the LMDB format and the synthetic dataset all
yield objects with these three attributes (`ReferRecord`, or
:class:`~cris_edge.data.synthetic.SyntheticSample`), so training and evaluation take any of them.

A missing or corrupt file is a `DatasetError` whose message names the file.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Union

import cv2
import numpy as np

PathLike = Union[str, Path]


class DatasetError(Exception):
    """A dataset file is missing, unreadable or malformed; the message names it."""


class Record(Protocol):
    """One referent: ``image`` uint8 ``[H, W, 3]`` BGR, ``mask`` uint8 ``[H, W]`` in {0, 1},
    ``sentences`` (at least one str)."""

    image: np.ndarray
    mask: np.ndarray
    sentences: list[str]


@dataclass
class ReferRecord:
    """A referent from a real dataset.

    Attributes:
        image: uint8 ``[H, W, 3]`` BGR.
        mask: uint8 ``[H, W]`` in {0, 1}, the referent's pixels.
        sentences: the referring expressions, in dataset order.
        ref_id: the dataset's id of the referent (``seg_id`` in CRIS.pytorch's LMDB).
        category: the referent's category as a contiguous index (0..79 for COCO, ``cat`` in
            CRIS.pytorch's LMDB), -1 where unknown.
    """

    image: np.ndarray
    mask: np.ndarray
    sentences: list[str]
    ref_id: int
    category: int = -1


def read_bytes(path: PathLike, what: str = "file") -> bytes:
    """The bytes of ``path``; a `DatasetError` naming it if it is missing or unreadable."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"{what} not found: {path}") from None
    except OSError as err:
        raise DatasetError(f"cannot read {what} {path}: {err.strerror or err}") from None


def decode_image(data: bytes, source: str) -> np.ndarray:
    """Encoded image bytes (JPEG, PNG ...) -> uint8 ``[H, W, 3]`` BGR."""
    image = _imdecode(data, cv2.IMREAD_COLOR, source)
    if image is None:
        raise DatasetError(f"corrupt or unsupported image: {source}")
    return image


def _imdecode(data: bytes, flags: int, source: str):
    """``cv2.imdecode`` of bytes; None for undecodable data; a `DatasetError` for an image
    OpenCV refuses outright (dimensions over its pixel limit: a decompression bomb)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DatasetError(f"{source}: expected encoded image bytes, got {type(data).__name__}")
    if not data:
        return None
    try:
        return cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error as err:
        detail = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise DatasetError(f"corrupt or unsupported image: {source} ({detail})") from None


def decode_mask(data: bytes, source: str) -> np.ndarray:
    """Encoded mask bytes (PNG, 0 = background, anything else = referent) -> uint8 {0, 1}."""
    mask = _imdecode(data, cv2.IMREAD_GRAYSCALE, source)
    if mask is None:
        raise DatasetError(f"corrupt or unsupported mask image: {source}")
    return (mask > 0).astype(np.uint8)


def encode_png(mask: np.ndarray) -> bytes:
    """uint8 {0, 1} mask ``[H, W]`` -> PNG bytes holding 0 / 255 (as CRIS.pytorch's masks)."""
    ok, buf = cv2.imencode(".png", (np.asarray(mask) > 0).astype(np.uint8) * 255)
    if not ok:
        raise ValueError(f"cannot encode a mask of shape {np.shape(mask)} as PNG")
    return buf.tobytes()


class _DataOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain data only (dict, list, tuple, str, bytes, numbers, bool, None): any
    class or function reference is refused, so a file cannot run code when it is read."""

    _ALLOWED = {("_codecs", "encode"), ("builtins", "set"), ("builtins", "frozenset"),
                ("__builtin__", "set"), ("__builtin__", "frozenset")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only plain data is allowed")


def load_data_pickle(data: bytes, source: str) -> Any:
    """Unpickle ``data`` (any protocol, Python 2 or 3) allowing plain data only.

    The refer format's ``refs(unc).p`` and CRIS.pytorch's LMDB entries are pickles: the
    dataset format itself. Python 2 byte strings are decoded as UTF-8 (invalid bytes replaced).
    """
    try:
        return _DataOnlyUnpickler(io.BytesIO(data), encoding="utf-8", errors="replace").load()
    except Exception as err:  # a corrupt pickle raises almost any exception type
        raise DatasetError(f"cannot unpickle {source}: {err}") from None


def check_record(record: Record, source: str) -> None:
    """A `DatasetError` naming ``source`` unless image, mask and sentences are consistent."""
    if record.image.ndim != 3 or record.image.shape[2] != 3:
        raise DatasetError(f"{source}: image must be [H, W, 3], got {record.image.shape}")
    if record.mask.shape != record.image.shape[:2]:
        raise DatasetError(f"{source}: mask {record.mask.shape} does not match image "
                           f"{record.image.shape[:2]}")
    if not record.sentences or not all(isinstance(s, str) and s.strip() for s in record.sentences):
        raise DatasetError(f"{source}: needs at least one non-empty sentence, got {record.sentences!r}")

