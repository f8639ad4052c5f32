"""Referring-segmentation metrics of the official CRIS test protocol, plus overall IoU.

Each (image, sentence) pair contributes one IoU between the predicted and the ground-truth
mask at the image's original resolution. mIoU is their mean; Prec@X the fraction of pairs with
IoU > X (X = 0.5 ... 0.9, strictly greater, as CRIS.pytorch); overall IoU (oIoU, "cIoU" in
some papers; CRIS.pytorch does not report it) is the sum of intersections over the sum of
unions. A pair whose masks are both empty counts as IoU 1 (`mask_iou`); RefCOCO has none.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..runtime.postprocess import mask_overlap

PREC_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)


@dataclass
class SegmentationScores:
    """Accumulates per-pair IoU, intersection and union; `merge` combines shards (DDP ranks)."""

    ious: list = field(default_factory=list)
    intersections: list = field(default_factory=list)
    unions: list = field(default_factory=list)

    def add(self, pred: np.ndarray, target: np.ndarray) -> float:
        """Score one predicted mask against its ground truth (same ``[H, W]`` shape, non-zero =
        inside); returns the pair's IoU."""
        if np.shape(pred) != np.shape(target):
            raise ValueError(f"prediction {np.shape(pred)} and ground truth {np.shape(target)} differ in shape")
        inter, union = mask_overlap(pred, target)
        iou = 1.0 if union == 0 else inter / union
        self.ious.append(iou)
        self.intersections.append(inter)
        self.unions.append(union)
        return iou

    def merge(self, other: "SegmentationScores") -> "SegmentationScores":
        """Append ``other``'s pairs to these; returns self."""
        self.ious += other.ious
        self.intersections += other.intersections
        self.unions += other.unions
        return self

    def __len__(self) -> int:
        return len(self.ious)

    def summary(self) -> dict:
        """``{"mIoU", "oIoU", "Prec@0.5" ... "Prec@0.9", "samples"}``, fractions in [0, 1];
        ``samples`` = number of (image, sentence) pairs."""
        if not self.ious:
            raise ValueError("no predictions were scored")
        ious = np.asarray(self.ious, np.float64)
        union = sum(self.unions)
        out = {"mIoU": float(ious.mean()),
               "oIoU": float(sum(self.intersections) / union) if union else 1.0}
        out.update({f"Prec@{t:.1f}": float((ious > t).mean()) for t in PREC_THRESHOLDS})
        out["samples"] = len(ious)
        return out


def format_summary(summary: dict) -> str:
    """One line for logs: ``mIoU 87.12  oIoU 88.40  P@0.5 95.00 ...`` (percentages)."""
    parts = [f"mIoU {100 * summary['mIoU']:.2f}", f"oIoU {100 * summary['oIoU']:.2f}"]
    parts += [f"P@{t:.1f} {100 * summary[f'Prec@{t:.1f}']:.2f}" for t in PREC_THRESHOLDS]
    return "  ".join(parts) + f"  ({summary['samples']} pairs)"
