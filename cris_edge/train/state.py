"""Training checkpoints: ``last.pth`` / ``best.pth`` with everything a resume needs.

A training checkpoint is one of our model checkpoints (`save_checkpoint`: atomic, loadable by
`load_cris`, config = the full run config) with extra keys: ``epoch`` (epochs completed),
``optimizer``, ``scheduler``, ``scaler`` (AMP), ``best_metric``, ``metrics`` (that epoch's
log row) and ``seed``. The random state needs no separate entry: every epoch reseeds torch from
``(seed, epoch, rank)`` (`epoch_seed`) and data randomness comes from ``(seed, epoch, index)``,
so resuming after epoch ``e`` continues exactly as the uninterrupted run.

Files survive a kill at any instant: each is written to a hidden temporary in the same
directory (`save_checkpoint`: ``.last.pth.XXXXXXXX.tmp``) and renamed over its name, so
``last.pth`` and ``best.pth`` are always whole; a kill during a write leaves the temporary,
which the next run in that directory removes (`remove_stale_temporaries`, ours only). The pair
stays consistent across a kill between the two writes of an improving epoch: see
`save_epoch` and `repair_best`.
"""

from __future__ import annotations

import logging
import shutil
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
import torch

from ..model import save_checkpoint
from ..model.checkpoint import read_file
from ..paths import atomic_output
from ..paths import remove_stale_temporaries as stale_temporaries
from .config import RunConfig

log = logging.getLogger(__name__)

LAST, BEST, RUN_CONFIG = "last.pth", "best.pth", "config.yaml"


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


def remove_stale_temporaries(output_dir: Path) -> list[Path]:
    """Delete the temporaries a killed run left in ``output_dir`` beside the run's files
    (`cris_edge.paths.remove_stale_temporaries`: our exact names, of processes that are gone;
    nothing else of the directory is touched); returns them."""
    removed = [p for name in (LAST, BEST, RUN_CONFIG) for p in stale_temporaries(Path(output_dir) / name)]
    if removed:
        log.info("removed %d temporary file(s) left by an interrupted run in %s", len(removed), output_dir)
    return removed


def save_epoch(output_dir: Path, model: torch.nn.Module, run: RunConfig, improved: bool, **state: Any) -> None:
    """Write the end of an epoch: ``last.pth``, then (when the epoch ``improved`` the best
    metric) ``best.pth``, from the same ``state`` (`save_training_state`'s keywords, with
    ``epoch`` and ``best_epoch``).

    Why this order: ``last.pth`` records ``best_epoch``, the epoch ``best.pth`` must hold. A
    kill between the two writes leaves ``last.pth`` saying "the best is this epoch" while
    ``best.pth`` holds an older one; since the best epoch is then ``last.pth``'s own, what
    ``best.pth`` should be is exactly ``last.pth`` (the same state, written with the same
    keywords), and `repair_best` restores it from there on resume. The other order (``best.pth``
    first) would leave, after the same kill, a ``best.pth`` of an epoch that ``last.pth`` does
    not know, to be re-run after the resume: repairable only by re-evaluating, and the
    older best epoch's weights would be gone."""
    save_training_state(Path(output_dir) / LAST, model, run, **state)
    if improved:
        save_training_state(Path(output_dir) / BEST, model, run, **state)


def repair_best(output_dir: Path) -> Optional[str]:
    """Make ``best.pth`` the epoch ``last.pth`` records as the best (``best_epoch``), after a kill
    between the two writes of `save_epoch`; returns what was done, or None when nothing needed
    doing (the pair agrees, or ``last.pth`` predates ``best_epoch``).

    The repair is possible when the recorded best epoch is ``last.pth``'s own (the only
    inconsistency `save_epoch` can leave): ``best.pth`` becomes a copy of ``last.pth``, written
    atomically. Otherwise (``best.pth`` edited or replaced by hand) nothing is overwritten and
    the mismatch is logged."""
    output_dir = Path(output_dir)
    last, best = output_dir / LAST, output_dir / BEST
    if not last.is_file():
        return None
    state = read_file(last)
    best_epoch = state.get("best_epoch")
    if best_epoch is None:
        return None
    held = read_file(best).get("epoch") if best.is_file() else None
    if held == best_epoch:
        return None
    if best_epoch != state.get("epoch"):
        message = (f"{best} holds epoch {held}, but {last} records epoch {best_epoch} as the best and that "
                   "checkpoint is gone; left as it is")
        log.warning(message)
        return message
    with atomic_output(best) as tmp:
        shutil.copyfile(last, tmp)
    message = (f"repaired {best}: it held epoch {held}, {last} records epoch {best_epoch} as the best "
               f"(a run was stopped between writing the two); copied from {last}")
    log.warning(message)
    return message
