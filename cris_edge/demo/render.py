"""Drawing the demo's output: each prompt's mask blended in its own colour with its contour, and
a HUD with the FPS, the backend, per-stage latency and the prompts."""

from __future__ import annotations

from typing import Optional, Sequence

import cv2
import numpy as np

from ..runtime.result import STAGES, ZEROSHOT_STAGES, SegmentationResult

#: BGR colour of prompt i (cycled): green, magenta, orange, cyan, yellow, violet.
PALETTE = ((60, 220, 60), (220, 60, 220), (0, 140, 255), (230, 200, 0), (0, 230, 230), (200, 80, 120))
ALPHA = 0.5
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_SHORT = {"preprocess": "pre", "text": "text", "visual": "vis", "head": "head", "postprocess": "post",
          "global": "glob", "local": "loc", "score": "score"}


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
    shown = STAGES if "visual" in timings or not timings else ZEROSHOT_STAGES  # a zero-shot bundle's stages
    stages = " ".join(f"{_SHORT[s]} {timings.get(s, 0.0):.1f}" for s in shown)
    first = f"{'--' if fps is None else f'{fps:.1f}'} FPS  {backend}" + (f"  model {model}" if model else "")
    lines = [(first, white), (f"ms: {stages}", white)]
    lines += [(f"[{i + 1}] {p}", colour(i)) for i, p in enumerate(prompts)]
    if typing is not None:
        lines.append((f"> {typing}_  (Enter: set prompts, ';' between them, Esc: quit)", white))
    return lines


#: The HUD band's share of the frame's rows that the text is shrunk to fit (down to _MIN_SCALE).
HUD_MAX_ROWS = 0.15
#: How much of the frame shows through the HUD's dark band.
HUD_SHOW_THROUGH = 0.45
_MIN_SCALE = 0.3


def draw_hud(frame: np.ndarray, lines: Sequence[tuple[str, tuple[int, int, int]]]) -> None:
    """Draw ``lines`` (`hud_lines`) in the top-left corner of ``frame``, in place, on a translucent
    dark band. The text scales with the frame (1.0 at 1280x720) and shrinks, down to a readable
    floor, until the band takes at most ``HUD_MAX_ROWS`` of the frame's rows."""
    if not lines:
        return
    rows, cols = frame.shape[:2]
    scale = max(_MIN_SCALE, min(1.0, cols / 1280, rows / 720))
    while True:
        step = max(10, round(32 * scale))  # one line: capitals, descenders and a gap
        pad = max(3, step // 4)
        height = step * len(lines) + pad
        if height <= HUD_MAX_ROWS * rows or scale <= _MIN_SCALE:
            break
        scale = max(_MIN_SCALE, scale - 0.05)
    width = max(cv2.getTextSize(text, _FONT, scale, 1)[0][0] for text, _ in lines) + 2 * pad
    band = frame[:height, :width]
    band[:] = (band * HUD_SHOW_THROUGH).astype(np.uint8)
    for k, (text, bgr) in enumerate(lines):
        cv2.putText(frame, text, (pad, pad // 2 + step * k + round(24 * scale)), _FONT, scale, bgr, 1, cv2.LINE_AA)
