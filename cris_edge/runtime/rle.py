"""COCO run-length encoding of binary masks, in numpy (no pycocotools, no torch).

A COCO RLE is ``{"size": [H, W], "counts": ...}``: the lengths of alternating runs of 0 and 1
over the mask read in column-major (Fortran) order, starting with a run of zeros (0 when the
first pixel is set). ``counts`` is a list of ints (*uncompressed*, as COCO annotations of crowd
regions) or a str/bytes (*compressed*, as pycocotools' ``encode`` and COCO results files:
each count, from the fourth on as the difference to the count two before, in 5-bit groups
written as characters from ``"0"``).
"""

from __future__ import annotations

from typing import Union

import numpy as np

Counts = Union[list, str, bytes]


def encode(mask: np.ndarray, compressed: bool = False) -> dict:
    """``mask`` (``[H, W]``, nonzero = inside) -> ``{"size": [H, W], "counts": ...}``: a list of
    ints, or with ``compressed`` the COCO string (str, as pycocotools writes it to JSON)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be [H, W], got shape {mask.shape}")
    flat = mask.astype(bool).ravel(order="F")
    counts: list = []
    if flat.size:
        bounds = np.concatenate(([0], np.flatnonzero(flat[1:] != flat[:-1]) + 1, [flat.size]))
        counts = ([0] if flat[0] else []) + [int(c) for c in np.diff(bounds)]
    size = [int(mask.shape[0]), int(mask.shape[1])]
    return {"size": size, "counts": _to_string(counts) if compressed else counts}


def decode(rle: dict, height: int, width: int, source: str = "RLE") -> np.ndarray:
    """A COCO RLE dict (compressed or not) -> bool ``[height, width]``. ValueError naming
    ``source`` when it is malformed or its ``size`` is not ``[height, width]`` (an RLE is decoded
    at its own size only, so a hostile size cannot ask for any amount of memory)."""
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise ValueError(f"{source}: a COCO RLE is a dict with 'size' and 'counts', got {str(rle)[:60]}")
    size = rle["size"]
    if not (isinstance(size, (list, tuple)) and len(size) == 2 and list(size) == [height, width]):
        raise ValueError(f"{source}: RLE size {size!r} is not the frame's [{height}, {width}]")
    counts = rle["counts"]
    if isinstance(counts, (str, bytes)):
        counts = _from_string(counts, source)
    elif not (isinstance(counts, (list, tuple)) and all(isinstance(c, (int, np.integer)) and not isinstance(c, bool)
                                                      for c in counts)):
        raise ValueError(f"{source}: RLE counts must be a list of ints or a COCO string")
    counts = np.asarray(counts, np.int64)
    if (counts < 0).any() or int(counts.sum()) != height * width:
        raise ValueError(f"{source}: RLE counts must be >= 0 and add up to {height} x {width} = {height * width} "
                         f"pixels, they add up to {int(counts.sum())}")
    values = np.arange(len(counts)) % 2 == 1
    return np.repeat(values, counts).reshape(width, height).T


def _to_string(counts: list) -> str:
    out = []
    for i, count in enumerate(counts):
        x = count - counts[i - 2] if i > 2 else count
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            out.append(chr((c | 0x20 if more else c) + 48))
    return "".join(out)


def _from_string(text: Counts, source: str) -> list:
    data = text.encode("ascii", "replace") if isinstance(text, str) else bytes(text)
    counts: list = []
    x = shift = 0
    for byte in data:
        c = byte - 48
        if not 0 <= c < 64:
            raise ValueError(f"{source}: compressed RLE counts hold a character outside COCO's alphabet: {chr(byte)!r}")
        x |= (c & 0x1F) << shift
        shift += 5
        if not c & 0x20:
            if c & 0x10:
                x |= -1 << shift
            if len(counts) > 2:
                x += counts[-2]
            counts.append(x)
            x = shift = 0
    if shift:
        raise ValueError(f"{source}: compressed RLE counts end in the middle of a number")
    return counts
