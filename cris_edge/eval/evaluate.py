"""Evaluate a `Predictor` on records with the official CRIS test protocol."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

from tqdm import tqdm

from .metrics import SegmentationScores
from .predictor import Predictor


def evaluate(predictor: Predictor, records: Sequence, indices: Optional[Sequence[int]] = None,
             progress: bool = True, desc: str = "evaluating") -> SegmentationScores:
    """Score every sentence of every record separately: its mask against the record's mask at
    the image's original size (see :mod:`cris_edge.eval.metrics`).

    ``records``: a sequence of records (image, mask, sentences) from any dataset format;
    ``indices``: which of them (default: all, in order).
    """
    scores = SegmentationScores()
    indices = range(len(records)) if indices is None else indices
    bar = tqdm(indices, desc=desc, unit="ref", disable=None if progress else True, dynamic_ncols=True)
    for i in bar:
        record = records[i]
        for mask in predictor.predict(record.image, list(record.sentences)):
            scores.add(mask, record.mask)
        if len(scores):
            bar.set_postfix(mIoU=f"{sum(scores.ious) / len(scores):.4f}", refresh=False)
    return scores
