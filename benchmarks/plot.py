"""A stacked horizontal bar chart drawn with OpenCV (no plotting library needed): one bar per
benchmark row, one segment per stage, its total written at the end of the bar."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

#: BGR colours of the segments, in stage order (a colour-blind-safe palette: Okabe-Ito).
PALETTE = ((178, 114, 0), (0, 159, 230), (115, 158, 0), (66, 228, 240), (167, 121, 204), (150, 150, 150))
FONT, SMALL, NORMAL = cv2.FONT_HERSHEY_SIMPLEX, 0.45, 0.55
BAR_H, GAP, LEFT, RIGHT, TOP = 26, 10, 260, 90, 70


def stage_bars(labels: Sequence[str], segments: Sequence[Sequence[float]], stage_names: Sequence[str],
               title: str, unit: str = "ms", width: int = 1000) -> np.ndarray:
    """A white BGR uint8 image: bar ``i`` labelled ``labels[i]`` stacks ``segments[i]`` (one
    non-negative value per stage of ``stage_names``, in ``unit``), with its sum at its end."""
    totals = [float(sum(s)) for s in segments]
    scale = (width - LEFT - RIGHT) / max(max(totals, default=0.0), 1e-9)
    height = TOP + len(labels) * (BAR_H + GAP) + 50
    image = np.full((height, width, 3), 255, np.uint8)
    cv2.putText(image, title, (10, 24), FONT, NORMAL, (0, 0, 0), 1, cv2.LINE_AA)
    _legend(image, stage_names, 10, 50)
    for i, (label, values, total) in enumerate(zip(labels, segments, totals)):
        y = TOP + i * (BAR_H + GAP)
        cv2.putText(image, label[:38], (10, y + BAR_H - 8), FONT, SMALL, (0, 0, 0), 1, cv2.LINE_AA)
        x = float(LEFT)
        for k, value in enumerate(values):
            end = x + value * scale
            cv2.rectangle(image, (int(round(x)), y), (int(round(end)), y + BAR_H), PALETTE[k % len(PALETTE)], -1)
            x = end
        cv2.putText(image, f"{total:.1f} {unit}", (int(x) + 6, y + BAR_H - 8), FONT, SMALL, (0, 0, 0), 1,
                    cv2.LINE_AA)
    axis_y = TOP + len(labels) * (BAR_H + GAP)
    cv2.line(image, (LEFT, axis_y), (width - RIGHT, axis_y), (0, 0, 0), 1)
    cv2.putText(image, f"0 {unit}", (LEFT - 10, axis_y + 20), FONT, SMALL, (0, 0, 0), 1, cv2.LINE_AA)
    top = max(totals, default=0.0)
    cv2.putText(image, f"{top:.1f} {unit}", (width - RIGHT - 40, axis_y + 20), FONT, SMALL, (0, 0, 0), 1,
                cv2.LINE_AA)
    return image


def _legend(image: np.ndarray, names: Sequence[str], x: int, y: int) -> None:
    for k, name in enumerate(names):
        cv2.rectangle(image, (x, y - 11), (x + 14, y + 1), PALETTE[k % len(PALETTE)], -1)
        cv2.putText(image, name, (x + 20, y), FONT, SMALL, (0, 0, 0), 1, cv2.LINE_AA)
        x += 30 + 9 * len(name)


def write_png(path: Path, image: np.ndarray) -> None:
    """Save ``image`` as PNG at ``path`` (parents made); OSError if OpenCV cannot write it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), image):
        raise OSError(f"cannot write {path}")
