"""Mask proposals, the input of zero-shot referring segmentation: the formats they come in,
read into one bool ``[N, H, W]`` array (numpy + OpenCV only, no torch), and the built-in
generator for the synthetic scenes.

Formats `as_masks` reads:

- an array ``[N, H, W]`` (numpy, or anything ``np.asarray`` reads, such as a CPU tensor):
  bool, or integers that are all 0/1 or all 0/255 (one convention for the whole array); float
  (soft) masks are refused: threshold them first;
- a sequence of COCO RLE dicts (`cris_edge.runtime.rle`: compressed or uncompressed counts) or
  of ``[H, W]`` arrays;
- a JSON file (or its parsed content) in COCO results format: a list of
  ``{"image_id" or "file_name", "segmentation": RLE, "score" (optional), "bbox" (optional)}``,
  or a dict whose ``"annotations"`` list holds such entries (its ``"images"`` map file names to
  ids); the entries of one image are chosen by ``image`` (an id or a file name). This is what
  segment-anything, FreeSOLO/detectron2 and CutLER dumps give. ``bbox`` is not read: the method
  crops each mask's own tight box.

Zero proposals give an empty ``[0, H, W]`` array (the method then returns an empty result);
a mask of the wrong size, an empty mask (no pixel set) or non-binary values are a ValueError
naming the problem.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Optional, Protocol, Union

import cv2
import numpy as np

from .rle import decode as decode_rle, encode as encode_rle

PathLike = Union[str, Path]


class ProposalGenerator(Protocol):
    """Anything that proposes class-agnostic masks for a frame: ``frame`` uint8 ``[H, W, 3]``
    BGR -> bool ``[N, H, W]`` (N may be 0)."""

    def __call__(self, frame: np.ndarray) -> np.ndarray: ...


def as_masks(proposals, height: int, width: int, image: Union[int, str, None] = None) -> np.ndarray:
    """Proposals in any of the module's formats -> bool ``[N, height, width]`` (N >= 0).

    ``image``: which image's entries to take from a COCO results file or list (its ``image_id``
    or ``file_name``); None is allowed only when every entry belongs to one image.
    """
    if isinstance(proposals, (str, Path)):
        return _from_results(read_results(proposals), height, width, image, str(proposals))
    if isinstance(proposals, Mapping) or (_is_sequence(proposals) and proposals and isinstance(proposals[0], Mapping)
                                          and "segmentation" in proposals[0]):
        return _from_results(proposals, height, width, image, "proposals")
    if _is_sequence(proposals):
        if not proposals:
            return np.zeros((0, height, width), bool)
        if all(isinstance(p, Mapping) for p in proposals):
            return _checked(np.stack([decode_rle(p, height, width, f"proposal {i}") for i, p in enumerate(proposals)]),
                            height, width)
        proposals = [np.asarray(p) for p in proposals]
        if any(p.ndim != 2 for p in proposals):
            raise ValueError(f"proposals must be bool/uint8 [N, H, W] masks or [H, W] masks each, got shapes "
                             f"{[p.shape for p in proposals][:5]}")
        if len({p.shape for p in proposals}) > 1:
            raise ValueError(f"proposal masks differ in size: {sorted({p.shape for p in proposals})[:5]}; the frame "
                             f"is {height}x{width}")
        proposals = np.stack(proposals)
    try:
        array = np.asarray(proposals)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"proposals must be masks [N, H, W], RLE dicts or a COCO results file, got "
                         f"{type(proposals).__name__} ({err})") from None
    if array.dtype == object or array.ndim != 3:
        raise ValueError(f"proposals must be masks [N, H, W], RLE dicts or a COCO results file, got "
                         f"{type(proposals).__name__} of shape {array.shape}")
    return _checked(array, height, width)


def _is_sequence(value) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


def _checked(masks: np.ndarray, height: int, width: int) -> np.ndarray:
    """bool ``[N, H, W]`` from a bool/integer array, or a ValueError naming the problem."""
    if masks.shape[1:] != (height, width):
        raise ValueError(f"proposal masks are {masks.shape[1]}x{masks.shape[2]}, the frame is {height}x{width}")
    if masks.dtype != bool:
        if not np.issubdtype(masks.dtype, np.integer):
            raise ValueError(f"proposal masks must be bool or uint8 masks (0/1 or 0/255), got {masks.dtype} "
                             "(threshold soft masks first)")
        values = set(np.unique(masks).tolist())
        if not (values <= {0, 1} or values <= {0, 255}):
            raise ValueError(f"proposal masks must be binary, all 0/1 or all 0/255: got values {sorted(values)[:6]}")
        masks = masks != 0
    empty = np.flatnonzero(~masks.any(axis=(1, 2)))
    if len(empty):
        raise ValueError(f"proposal masks {empty[:10].tolist()} are empty (no pixel set)")
    return masks


def read_results(path: PathLike):
    """The parsed content of a COCO results JSON file; ValueError naming the file if it is not JSON."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"proposal file not found: {path}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a JSON file of proposals ({err})") from None


def _from_results(results, height: int, width: int, image, source: str) -> np.ndarray:
    """The masks of ``image`` from COCO results (a list of entries, or a dict with annotations)."""
    names: dict = {}
    if isinstance(results, Mapping):
        if not isinstance(results.get("annotations"), list):
            raise ValueError(f"{source}: expected a list of COCO results or a dict with an 'annotations' list")
        names = {i.get("file_name"): i.get("id") for i in results.get("images", []) if isinstance(i, Mapping)}
        results = results["annotations"]
    if not isinstance(results, list) or not all(isinstance(e, Mapping) and "segmentation" in e for e in results):
        raise ValueError(f"{source}: every COCO result must be a dict with a 'segmentation'")

    def key(entry):
        return entry.get("image_id", names.get(entry.get("file_name"), entry.get("file_name")))

    if image is None:
        images = {key(e) for e in results}
        if len(images) > 1:
            raise ValueError(f"{source} holds proposals of {len(images)} images: say which (image id or file name)")
        chosen = results
    else:
        wanted = {image, names.get(image, image)}
        chosen = [e for e in results if key(e) in wanted or e.get("file_name") in wanted]
    masks = []
    for n, entry in enumerate(chosen):
        segmentation = entry["segmentation"]
        if not isinstance(segmentation, Mapping):
            raise ValueError(f"{source}: result {n} of image {image!r}: segmentation must be a COCO RLE dict "
                             "(polygons are not proposals' format)")
        masks.append(decode_rle(segmentation, height, width, f"{source}: result {n} of image {image!r}"))
    if not masks:
        return np.zeros((0, height, width), bool)
    return _checked(np.stack(masks), height, width)


def results_entries(masks: np.ndarray, image: Union[int, str], scores: Optional[Sequence[float]] = None) -> list:
    """bool ``[N, H, W]`` masks of one image -> COCO results entries (compressed RLE, tight
    ``bbox`` in COCO's ``[x, y, w, h]``, ``score`` when given), keyed by ``image_id`` (int) or
    ``file_name`` (str): what `as_masks` reads back."""
    entries = []
    for n, mask in enumerate(np.asarray(masks, bool)):
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        entry = {"image_id" if isinstance(image, (int, np.integer)) else "file_name": image,
                 "segmentation": encode_rle(mask, compressed=True),
                 "bbox": [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)]
                 if len(rows) else [0, 0, 0, 0]}
        if scores is not None:
            entry["score"] = float(scores[n])
        entries.append(entry)
    return entries


class PaletteSegments:
    """The built-in proposal generator for the synthetic scenes: every connected region of pixels
    within ``tolerance`` (per channel) of one of the ``palette`` colours (name -> BGR; the
    synthetic scenes' is ``cris_edge.data.synthetic_scene.COLOURS``), of at least ``min_area``
    pixels, is a proposal (8-connectivity, holes kept).

    It is colour thresholding plus connected components, not a proposal network: it finds the
    flat, saturated shapes of `cris_edge.data.synthetic` on their grey backgrounds and nothing
    else. Where it fails: two touching shapes of one colour come out as one proposal; a shape cut
    in two by one drawn over it comes out as two; anti-aliased edge pixels (blended with the
    background) are left out; a background patch close to a palette colour (a bright grey near
    "white") can become a proposal; real photographs give fragments of whatever happens to be
    close to the seven colours.
    """

    def __init__(self, palette: Mapping[str, tuple], tolerance: int = 30, min_area: int = 20):
        self.palette = {name: np.asarray(bgr, np.int16) for name, bgr in palette.items()}
        self.tolerance, self.min_area = int(tolerance), int(min_area)

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """uint8 BGR ``[H, W, 3]`` -> bool ``[N, H, W]``, in palette order, then by component."""
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"the frame must be uint8 [H, W, 3] BGR, got {frame.dtype} {frame.shape}")
        pixels = frame.astype(np.int16)
        masks = []
        for bgr in self.palette.values():
            near = (np.abs(pixels - bgr).max(axis=2) <= self.tolerance).astype(np.uint8)
            count, labels, stats, _ = cv2.connectedComponentsWithStats(near, connectivity=8)
            masks += [labels == k for k in range(1, count) if stats[k, cv2.CC_STAT_AREA] >= self.min_area]
        if not masks:
            return np.zeros((0, *frame.shape[:2]), bool)
        return np.stack(masks)
