"""CRIS input pre-processing in numpy + OpenCV, equal to the official pipeline. Never imports torch.

The official pipeline (``utils/dataset.py`` of CRIS.pytorch) is: BGR frame -> RGB -> letterbox
affine warp to the network input (``cv2.INTER_CUBIC``, border = CLIP mean colour x 255) ->
float32 ``x / 255`` -> ``- mean`` -> ``/ std`` -> CHW. :func:`preprocess` gives the same values
bit for bit: the warp is the same OpenCV call, and the normalisation is a per-channel lookup
table of the 256 possible results, computed in float32 in the official operation order.

Sizes are ``(height, width)``; an ``int`` input size ``S`` means ``(S, S)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import cv2
import numpy as np

from ..constants import CLIP_MEAN, CLIP_STD

COLORS = ("bgr", "rgb")


@dataclass(frozen=True, eq=False)
class Frame:
    """A validated frame: uint8 ``[H, W, 3]`` (possibly a view of the caller's array) and whether
    its channels are BGR (else RGB)."""

    image: np.ndarray
    bgr: bool

    @property
    def hw(self) -> tuple[int, int]:
        return self.image.shape[0], self.image.shape[1]


@dataclass(frozen=True, eq=False)
class Letterbox:
    """One pre-processed frame (``eq=False``: compared and hashed by identity, as it holds arrays).

    Attributes:
        image: ``[1, 3, H, W]`` float32 or float16, normalised RGB, ready for the network. From
            :func:`letterbox_frames` it is a view into the batch array.
        matrix: ``[2, 3]`` float64 affine map, frame pixels -> input pixels.
        inverse: ``[2, 3]`` float64 affine map, input pixels -> frame pixels.
        frame_size: ``(height, width)`` of the original frame.
        input_size: ``(H, W)`` of the network input.
    """

    image: np.ndarray
    matrix: np.ndarray
    inverse: np.ndarray
    frame_size: tuple[int, int]
    input_size: tuple[int, int]


def _size_hw(size, name: str) -> tuple[int, int]:
    """``int`` or ``(h, w)`` -> ``(h, w)`` of positive ints; anything else is a ``ValueError``."""
    dims = (size, size) if isinstance(size, (int, np.integer)) else size
    try:
        h, w = dims
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an int or a (height, width) pair, got {size!r}") from None
    for d in (h, w):
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d <= 0:
            raise ValueError(f"{name} must hold positive ints, got {size!r}")
    return int(h), int(w)


def check_color(color) -> str:
    """``"bgr"`` or ``"rgb"``; anything else is a ValueError."""
    if not isinstance(color, str) or color not in COLORS:
        raise ValueError(f"color must be one of {COLORS}, got {color!r}")
    return color


def as_frame(frame: np.ndarray, color: str) -> Frame:
    """Validate a frame (uint8 ``[H, W]``, ``[H, W, 1]``, ``[H, W, 3]`` in ``color`` order or
    ``[H, W, 4]`` BGRA/RGBA, not empty) and bring it to three channels, once: a `Frame`.
    Raises ValueError naming the problem."""
    check_color(color)
    if not isinstance(frame, np.ndarray):
        raise ValueError(f"frame must be a numpy.ndarray, got {type(frame).__name__}")
    if frame.dtype != np.uint8:
        raise ValueError(f"frame must be uint8, got {frame.dtype}")
    if frame.ndim not in (2, 3):
        raise ValueError(f"frame must be HxW or HxWxC, got {frame.ndim} dims (shape {frame.shape})")
    if 0 in frame.shape:
        raise ValueError(f"frame must not be empty, got shape {frame.shape}")
    channels = 1 if frame.ndim == 2 else frame.shape[2]
    if channels == 1:
        return Frame(cv2.cvtColor(frame.reshape(frame.shape[:2]), cv2.COLOR_GRAY2RGB), False)
    if channels == 4:
        return Frame(cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR), color == "bgr")  # drops alpha, keeps order
    if channels == 3:
        return Frame(frame, color == "bgr")
    raise ValueError(f"frame must have 1, 3 or 4 channels, got {channels}")


def to_rgb(frame: np.ndarray, color: str = "bgr") -> np.ndarray:
    """Any supported frame layout -> uint8 ``[H, W, 3]`` RGB.

    Accepts uint8 ``[H, W, 3]`` in ``color`` order ("bgr" or "rgb"), ``[H, W, 4]`` BGRA/RGBA (alpha
    dropped) and grayscale ``[H, W]`` / ``[H, W, 1]``; strided views are fine. An RGB input may be
    returned as is (not copied). Anything else raises ``ValueError`` naming the problem.
    """
    checked = as_frame(frame, color)
    return cv2.cvtColor(checked.image, cv2.COLOR_BGR2RGB) if checked.bgr else checked.image


def letterbox_matrices(
    frame_hw: tuple[int, int], input_size: int | tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Forward (frame -> input) and inverse (input -> frame) ``[2, 3]`` float64 affine matrices.

    Aspect-preserving scale to fit the input, centred; computed as the official ``getTransformMat``
    (float32 corner points through ``cv2.getAffineTransform``), so the matrices are bit-identical.
    """
    frame_h, frame_w = _size_hw(frame_hw, "frame_hw")
    in_h, in_w = _size_hw(input_size, "input_size")
    scale = min(in_h / frame_h, in_w / frame_w)
    fit_h, fit_w = frame_h * scale, frame_w * scale
    pad_x, pad_y = (in_w - fit_w) / 2.0, (in_h - fit_h) / 2.0
    frame_pts = np.array([[0, 0], [frame_w, 0], [0, frame_h]], np.float32)
    input_pts = np.array(
        [[pad_x, pad_y], [fit_w + pad_x, pad_y], [pad_x, fit_h + pad_y]], np.float32
    )
    return cv2.getAffineTransform(frame_pts, input_pts), cv2.getAffineTransform(input_pts, frame_pts)


@lru_cache(maxsize=16)
def _normalise_lut(mean: tuple[float, ...], std: tuple[float, ...], dtype: str) -> np.ndarray:
    """``[3, 256]`` table: ``((v / 255) - mean[c]) / std[c]`` in float32, then cast to ``dtype``."""
    levels = np.arange(256, dtype=np.float32)[None, :] / np.float32(255.0)
    mean32 = np.asarray(mean, np.float32)[:, None]
    std32 = np.asarray(std, np.float32)[:, None]
    lut = ((levels - mean32) / std32).astype(dtype)
    lut.flags.writeable = False
    return lut


def _letterbox_into(
    frame: Frame, out: np.ndarray, input_hw: tuple[int, int], mean: tuple[float, ...], lut: np.ndarray,
) -> Letterbox:
    """Letterbox ``frame`` into ``out`` (``[1, 3, H, W]``, written in place)."""
    image, is_bgr = frame.image, frame.bgr
    matrix, inverse = letterbox_matrices(image.shape[:2], input_hw)
    border = [m * 255 for m in (mean[::-1] if is_bgr else mean)]
    warped = cv2.warpAffine(
        image, matrix, input_hw[::-1], flags=cv2.INTER_CUBIC, borderValue=border
    )
    # The warp is per channel, so warping BGR and reading channels in reverse equals warping RGB.
    for c in range(3):
        np.take(lut[c], warped[:, :, 2 - c if is_bgr else c], out=out[0, c], mode="clip")
    return Letterbox(out, matrix, inverse, image.shape[:2], input_hw)


def _check_norm(mean, std, dtype) -> tuple[tuple[float, ...], tuple[float, ...], np.dtype]:
    """Validate normalisation arguments; return them as float tuples and a numpy dtype."""
    mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
    if len(mean) != 3 or len(std) != 3 or 0.0 in std:
        raise ValueError(f"mean and std must hold 3 values, std non-zero; got {mean}, {std}")
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float16):
        raise ValueError(f"dtype must be float32 or float16, got {dtype}")
    return mean, std, dtype


def letterbox_frames(
    frames: Sequence[Frame],
    input_size: int | tuple[int, int],
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
    dtype=np.float32,
) -> tuple[np.ndarray, list[Letterbox]]:
    """Validated `Frame` s of any sizes -> one batch, as :func:`preprocess` does each.

    Returns ``(images, letterboxes)``: ``images`` is ``[B, 3, H, W]`` of ``dtype``, and
    ``letterboxes[i].image`` is the ``[1, 3, H, W]`` view ``images[i:i + 1]`` (no copy).
    """
    if len(frames) == 0:
        raise ValueError("frames must hold at least one frame")
    input_hw = _size_hw(input_size, "input_size")
    mean, std, dtype = _check_norm(mean, std, dtype)
    lut = _normalise_lut(mean, std, dtype.name)
    images = np.empty((len(frames), 3, *input_hw), dtype)
    boxes = [_letterbox_into(f, images[i : i + 1], input_hw, mean, lut) for i, f in enumerate(frames)]
    return images, boxes


def preprocess_batch(
    frames: Sequence[np.ndarray],
    input_size: int | tuple[int, int],
    color: str = "bgr",
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
    dtype=np.float32,
) -> tuple[np.ndarray, list[Letterbox]]:
    """Pre-process frames (any layout :func:`as_frame` accepts) of any sizes into one batch:
    :func:`letterbox_frames` of the validated frames."""
    return letterbox_frames([as_frame(f, color) for f in frames], input_size, mean, std, dtype)


def preprocess(
    frame: np.ndarray,
    input_size: int | tuple[int, int],
    color: str = "bgr",
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
    dtype=np.float32,
) -> Letterbox:
    """One frame (any layout :func:`to_rgb` accepts) -> :class:`Letterbox`.

    ``image`` is ``[1, 3, H, W]``: the frame letterboxed with ``cv2.INTER_CUBIC`` and a border of
    the mean colour x 255, then ``(x / 255 - mean) / std`` in float32 and cast to ``dtype``
    (float32 or float16). Equal, bit for bit, to the official pipeline's input tensor.
    """
    return preprocess_batch([frame], input_size, color, mean, std, dtype)[1][0]
