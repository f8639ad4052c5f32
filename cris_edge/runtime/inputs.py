"""Validation of what users pass to `Segmenter`: every problem is a ``ValueError`` naming it,
raised before any work is done."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .preprocess import Frame, as_frame


def check_texts(text) -> tuple[list[str], bool]:
    """``text``: a str or a non-empty list/tuple of str -> ``(texts, single)``, ``single`` True
    when one str was given. Raises ValueError for another type, an empty list, a non-str item,
    or an empty / whitespace-only text."""
    single = isinstance(text, str)
    if single:
        texts = [text]
    elif isinstance(text, (list, tuple)):
        texts = list(text)
        if not texts:
            raise ValueError("text must be a str or a non-empty list of str, got an empty list")
    else:
        raise ValueError(f"text must be a str or a list of str, got {type(text).__name__}: {text!r}")
    for n, item in enumerate(texts):
        where = "text" if single else f"text[{n}]"
        if not isinstance(item, str):
            raise ValueError(f"{where} must be a str, got {type(item).__name__}: {item!r}")
        if not item.strip():
            raise ValueError(f"{where} is empty: give the sentence that names the object to segment")
    return texts, single


def check_frame(frame, color: str = "bgr", where: str = "frame") -> Frame:
    """Validate one frame (a uint8 numpy array ``[H, W]``, ``[H, W, 1]``, ``[H, W, 3]`` in
    ``color`` order or ``[H, W, 4]`` BGRA/RGBA, not empty) and bring it to three channels: the
    `Frame` every backend takes. The message of the ValueError starts with ``where``."""
    try:
        return as_frame(frame, color)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None


def check_frames(frames) -> list[np.ndarray]:
    """A non-empty sequence of frames (not one array) -> a list (each frame is then checked with
    `check_frame`)."""
    if isinstance(frames, np.ndarray) or not isinstance(frames, Sequence) or len(frames) == 0:
        raise ValueError(f"frames must be a non-empty list of frames, got {type(frames).__name__}"
                         + (" (for one frame, use run)" if isinstance(frames, np.ndarray) else ""))
    return list(frames)
