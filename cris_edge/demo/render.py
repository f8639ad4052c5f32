"""Drawing the demo's output: each prompt's mask blended in its own colour with its contour, and
a HUD with the FPS, the backend, per-stage latency and the prompts."""

from __future__ import annotations

from typing import Optional, Sequence

import cv2
import numpy as np

from ..runtime.result import STAGES, SegmentationResult

#: BGR colour of prompt i (cycled): green, magenta, orange, cyan, yellow, violet.
PALETTE = ((60, 220, 60), (220, 60, 220), (0, 140, 255), (230, 200, 0), (0, 230, 230), (200, 80, 120))
ALPHA = 0.5
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_SHORT = {"preprocess": "pre", "text": "text", "visual": "vis", "head": "head", "postprocess": "post"}


def colour(i: int) -> tuple[int, int, int]:
    """BGR colour of prompt ``i``."""
    return PALETTE[i % len(PALETTE)]


def draw_masks(frame: np.ndarray, results: Sequence[SegmentationResult]) -> np.ndarray:
    """A copy of BGR uint8 ``frame`` with each result's mask blended (``ALPHA``) in `colour(i)`
    and outlined with its contour."""
    out = frame.copy()
    for i, result in enumerate(results):
        inside = result.mask.astype(bool)
        if not inside.any():
            continue
        tint = np.array(colour(i), np.float32)
        out[inside] = (out[inside] * (1 - ALPHA) + tint * ALPHA).astype(np.uint8)
        contours, _ = cv2.findContours(result.mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, colour(i), 2, cv2.LINE_AA)
    return out


def hud_lines(fps: Optional[float], backend: str, timings: dict[str, float], prompts: Sequence[str],
              typing: Optional[str] = None, model: Optional[str] = None) -> list[tuple[str, tuple[int, int, int]]]:
    """The HUD's lines and their colours (white, prompts in their mask colours); ``model``: the
    model's name, on the first line after the backend."""
    white = (255, 255, 255)
    stages = " ".join(f"{_SHORT[s]} {timings.get(s, 0.0):.1f}" for s in STAGES)
    first = f"{'--' if fps is None else f'{fps:.1f}'} FPS  {backend}" + (f"  model {model}" if model else "")
    lines = [(first, white), (f"ms: {stages}", white)]
    lines += [(f"[{i + 1}] {p}", colour(i)) for i, p in enumerate(prompts)]
    if typing is not None:
        lines.append((f"> {typing}_  (Enter: set prompts, ';' between them, Esc: quit)", white))
    return lines


def draw_hud(frame: np.ndarray, lines: Sequence[tuple[str, tuple[int, int, int]]]) -> None:
    """Draw ``lines`` (`hud_lines`) in the top-left corner of ``frame``, in place, on a dark band
    scaled to the frame's width."""
    scale = max(0.35, min(1.0, frame.shape[1] / 1280))
    step = int(24 * scale) + 4
    width = max(cv2.getTextSize(text, _FONT, scale, 1)[0][0] for text, _ in lines) + 12
    height = step * len(lines) + 8
    band = frame[:height, :width]
    band[:] = (band * 0.35).astype(np.uint8)
    for k, (text, bgr) in enumerate(lines):
        cv2.putText(frame, text, (6, step * (k + 1)), _FONT, scale, bgr, 1, cv2.LINE_AA)
