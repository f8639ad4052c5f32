"""Training checkpoints: ``last.pth`` / ``best.pth`` with everything a resume needs.

A training checkpoint is one of our model checkpoints (`save_checkpoint`: atomic, loadable by
`load_cris`, config = the full run config) with extra keys: ``epoch`` (epochs completed),
``optimizer``, ``scheduler``, ``scaler`` (AMP), ``best_metric``, ``metrics`` (that epoch's
log row) and ``seed``. The random state needs no separate entry: every epoch reseeds torch from
``(seed, epoch, rank)`` (`epoch_seed`) and data randomness comes from ``(seed, epoch, index)``,
so resuming after epoch ``e`` continues exactly as the uninterrupted run.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from ..model import save_checkpoint
from ..model.checkpoint import read_file
from .config import RunConfig


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """The torch seed of one epoch on one process."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


def save_training_state(path: Path, model: torch.nn.Module, run: RunConfig, *, epoch: int,
                        optimizer, scheduler, scaler, best_metric: float,
                        metrics: Mapping[str, Any], **extra: Any) -> Path:
    """Write a resumable checkpoint of ``model`` (the bare CRIS, not a DDP wrapper) atomically;
    ``extra``: more training-only state (the category classifier's weights)."""
    sched = scheduler.state_dict()
    sched["milestones"] = dict(sched["milestones"])  # a Counter: not plain data for weights_only
    return save_checkpoint(path, model, run.to_dict(), epoch=epoch, optimizer=optimizer.state_dict(),
                           scheduler=sched, scaler=scaler.state_dict(), best_metric=float(best_metric),
                           metrics=dict(metrics), seed=run.train.seed, **extra)


def load_training_state(path: Path, run: RunConfig) -> dict:
    """Read a checkpoint written by `save_training_state` (safely: tensors and plain data only)
    and check that its model config is ``run``'s."""
    state = read_file(path)
    missing = [k for k in ("epoch", "optimizer", "scheduler", "scaler", "config", "state_dict") if k not in state]
    if missing:
        raise ValueError(f"{path} is not a resumable training checkpoint (missing {missing}); "
                         "to start from its weights use a fresh run")
    saved = {k: v for k, v in state["config"].items() if k not in ("name", "train", "data", "masksd")}
    if saved != run.model.to_dict():
        raise ValueError(f"{path} was trained with a different model config:\n  checkpoint: {saved}\n"
                         f"  this run:   {run.model.to_dict()}")
    state["scheduler"]["milestones"] = Counter(state["scheduler"]["milestones"])
    return state
