"""The CRIS training loop: the official recipe on CPU, one GPU, or many through torchrun.

Recipe (CRIS.pytorch ``train.py``): Adam; the backbone (every ``backbone.*`` weight but the
positional embeddings) at ``base_lr * lr_multi``, everything else at ``base_lr``; MultiStepLR
stepped once per epoch; BCE on the ``S/4`` logits; global batch ``batch_size`` split over the
processes; incomplete last batches dropped; AMP (fp16 autocast + GradScaler) on CUDA
(bf16 autocast on CPU with ``train.cpu_amp``).
One deliberate difference: the official code lets the backbone run at the head's rate during
epoch 1 (its MultiStepLR takes ``initial_lr`` only from its first ``step``); here the backbone
runs at ``base_lr * lr_multi`` from the first step. Validation after an epoch uses the full test
protocol (every sentence of every referent, :mod:`cris_edge.eval`), where the official code
scores the first sentence of each referent only.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import yaml
from torch.optim.lr_scheduler import MultiStepLR
from tqdm import tqdm

from ..eval.evaluate import evaluate
from ..eval.metrics import SegmentationScores, format_summary
from ..eval.predictor import SegmenterPredictor
from ..model import CRIS, load_clip_weights
from ..paths import write_atomically
from . import distributed
from .config import RunConfig
from .data import TrainDataset, category_count, check_batch, make_loader, train_records, val_records
from .log import TrainingLog
from .objective import CRISObjective
from .state import (LAST, RUN_CONFIG, epoch_seed, load_training_state, remove_stale_temporaries, repair_best,
                    save_epoch)

log = logging.getLogger(__name__)
LOSS_NAMES = ("loss", "bce", "dice", "category", "sd_image", "sd_text")
_STEP_LOG_EVERY = 10


@dataclass(frozen=True)
class TrainResult:
    """What `train` returns (on every process). ``seconds``: wall time of making the training
    records (all of them with ``data.in_memory``) and the epochs run;
    ``cpu_seconds``: CPU time this process used meanwhile (all its threads, not DataLoader
    workers), which tells the run's cost on a machine shared with other jobs."""

    output_dir: Path
    epochs_run: int
    best_metric: float
    last_metrics: dict
    seconds: float
    cpu_seconds: float


def param_groups(model: CRIS, base_lr: float, lr_multi: float) -> list[dict]:
    """The official two groups: backbone weights (positional embeddings excepted) at
    ``base_lr * lr_multi``, the rest at ``base_lr``; CLIP's unused ``logit_scale`` is left out."""
    backbone, head = [], []
    for name, param in model.named_parameters():
        if name == "backbone.logit_scale":
            continue
        is_backbone = name.startswith("backbone.") and "positional_embedding" not in name
        (backbone if is_backbone else head).append(param)
    return [{"params": backbone, "lr": base_lr * lr_multi, "name": "backbone"},
            {"params": head, "lr": base_lr, "name": "head"}]


def autocast_dtype(run: RunConfig, device_type: str) -> Optional[torch.dtype]:
    """The mixed-precision dtype of a training step: float16 on CUDA with ``train.amp``,
    bfloat16 on CPU with ``train.cpu_amp``, None (float32) otherwise."""
    if device_type == "cuda" and run.train.amp:
        return torch.float16
    if device_type == "cpu" and run.train.cpu_amp:
        return torch.bfloat16
    return None


def _build_model(run: RunConfig, clip_weights: Optional[str]) -> CRIS:
    torch.manual_seed(run.train.seed)  # same initial weights on every process
    model = CRIS(run.model)
    weights = clip_weights or run.train.clip_weights
    if weights:
        if not Path(weights).is_file():
            raise FileNotFoundError(f"CLIP weights not found: {weights} (give the OpenAI archive, e.g. "
                                    "RN50.pt, with --clip-weights)")
        load_clip_weights(model.backbone, weights)
    return model


def _validate(model: CRIS, records, run: RunConfig, env: distributed.DistEnv, epoch: int) -> dict:
    limit = run.train.val_samples or len(records)
    indices = range(min(limit, len(records)))[env.rank::env.world_size]
    scores = evaluate(SegmenterPredictor.from_model(model, env.device), records, indices, progress=env.is_main,
                      desc=f"val {epoch}")
    merged = SegmentationScores()
    for part in distributed.gather_objects(scores):
        merged.merge(part)
    return merged.summary()


def _run_epoch(objective, optimizer, scaler, loader, run: RunConfig, env, epoch: int,
               train_log: Optional[TrainingLog]) -> dict:
    objective.train()
    device = env.device.type
    amp_dtype = autocast_dtype(run, device)
    sums = torch.zeros(len(LOSS_NAMES), dtype=torch.float64)
    steps = 0
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{run.train.epochs}", unit="batch",
               disable=None if env.is_main else True, dynamic_ncols=True)
    for batch in bar:
        image, tokens, mask, category = (t.to(env.device, non_blocking=True) for t in check_batch(batch))
        image = image.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type=device, dtype=amp_dtype, enabled=amp_dtype is not None):
            _, losses = objective(image, tokens, mask, category)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(losses["loss"]).backward()
        if run.train.max_norm:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(objective.parameters(), run.train.max_norm)
        scaler.step(optimizer)
        scaler.update()
        values = {k: float(v.detach()) for k, v in losses.items()}
        sums += torch.tensor([values.get(k, 0.0) for k in LOSS_NAMES], dtype=torch.float64)
        steps += 1
        bar.set_postfix(loss=f"{values['loss']:.4f}", refresh=False)
        if train_log is not None and steps % _STEP_LOG_EVERY == 0:
            train_log.step(epoch * len(loader) + steps, values)
    totals = distributed.all_reduce_sum(torch.cat([sums, torch.tensor([steps], dtype=torch.float64)]))
    means = (totals[:-1] / totals[-1]).tolist()
    return {k: v for k, v in zip(LOSS_NAMES, means) if k in losses}


def train(run: RunConfig, output_dir: str | Path, *, clip_weights: Optional[str] = None,
          resume: Optional[str | Path] = None, device: Optional[str] = None) -> TrainResult:
    """Train ``run`` and write ``last.pth``, ``best.pth``, ``log.csv``, ``tensorboard/`` and
    ``config.yaml`` to ``output_dir``.

    ``resume``: a ``last.pth`` to continue from (model, optimizer, scheduler, scaler, epoch);
    ``device``: ``cpu``, ``cuda`` or None (CUDA when available). Under torchrun every process
    calls this; rank 0 writes the files. ``best.pth`` is the epoch with the highest validation
    mIoU, or the lowest training loss when the run does not validate.

    A fresh run (no ``resume``) refuses an ``output_dir`` that already holds a run's
    ``last.pth``: it would overwrite that run's checkpoints (continue it with ``resume``, or
    choose another directory). Temporaries left by a killed run there are removed first, and on
    resume a ``best.pth`` left behind by a kill between the two checkpoint writes is repaired
    (`cris_edge.train.state.save_epoch`).
    """
    output_dir = Path(output_dir)
    if resume is None and (output_dir / LAST).exists():
        raise FileExistsError(f"{output_dir} already holds a run ({LAST}): continue it with --resume, or choose "
                              "another --output-dir (a fresh run would overwrite its checkpoints)")
    env = distributed.setup(device)
    train_log = None
    try:
        t = run.train
        if t.batch_size % env.world_size:
            raise ValueError(f"train.batch_size ({t.batch_size}) must divide by the {env.world_size} processes")
        # channels-last: oneDNN's and cuDNN's fast convolution layout (same model and results
        # up to the order of floating-point sums)
        model = _build_model(run, clip_weights).to(memory_format=torch.channels_last)
        torch.manual_seed(t.seed)  # the category classifier's initial weights, on every process
        core = CRISObjective(model, run.masksd, t.loss_at, t.dice_weight, t.category_weight,
                             category_count(run))
        objective = distributed.wrap_model(core, env)
        groups = param_groups(model, t.base_lr, t.lr_multi)
        if core.category_loss is not None:  # trained at the head's rate, saved for resuming only
            groups[1]["params"] += list(core.category_loss.parameters())
        # fused: one kernel per parameter group instead of a dozen per tensor (the same update)
        optimizer = torch.optim.Adam(groups, lr=t.base_lr, weight_decay=t.weight_decay,
                                     fused=env.device.type in ("cpu", "cuda"))
        scheduler = MultiStepLR(optimizer, milestones=list(t.milestones), gamma=t.lr_decay)
        # float16 needs the loss scaled against underflow; bfloat16 has float32's range
        scaler = torch.amp.GradScaler("cuda", enabled=autocast_dtype(run, env.device.type) == torch.float16)
        start_epoch, best, best_epoch = 0, -float("inf"), None
        if env.is_main:
            remove_stale_temporaries(output_dir)
            if resume:
                repair_best(output_dir)
        if resume:
            state = load_training_state(Path(resume), run)
            model.load_state_dict(state["state_dict"])
            if core.category_loss is not None:
                if "category_loss" not in state:
                    raise ValueError(f"{resume} was trained without train.category_weight; resume it "
                                     "with the same setting")
                core.category_loss.load_state_dict(state["category_loss"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
            start_epoch, best = int(state["epoch"]), float(state["best_metric"])
            best_epoch = state.get("best_epoch")
        # the run's clock includes making the records (data.in_memory renders them all here)
        started, cpu_started = time.time(), time.process_time()
        dataset = TrainDataset(train_records(run, progress=env.is_main), run.model.input_size,
                               run.model.word_len, t.seed, run.pairs_per_image(start_epoch))
        loader = make_loader(dataset, t.batch_size // env.world_size, t.workers, t.seed,
                             env.rank, env.world_size)
        validation = val_records(run) if t.val_every else None
        if env.is_main:
            output_dir.mkdir(parents=True, exist_ok=True)
            write_atomically(output_dir / RUN_CONFIG, yaml.safe_dump(run.to_dict(), sort_keys=False))
            train_log = TrainingLog(output_dir)
            log.info("training %s on %d process(es), %s; %d samples, %d steps/epoch", run.name,
                     env.world_size, env.device, len(dataset), len(loader))
        row = {}
        for epoch in range(start_epoch, t.epochs):
            torch.manual_seed(epoch_seed(t.seed, epoch, env.rank))
            dataset.epoch, dataset.input_size = epoch, run.input_size(epoch)
            dataset.pairs = run.pairs_per_image(epoch)
            loader.sampler.set_epoch(epoch)
            lrs = [group["lr"] for group in optimizer.param_groups]
            tick, cpu_tick = time.time(), time.process_time()
            losses = _run_epoch(objective, optimizer, scaler, loader, run, env, epoch, train_log)
            seconds = time.time() - tick
            scheduler.step()
            if env.is_main:  # the bar shows only on a terminal; a log gets this line per epoch
                log.info("epoch %d/%d: loss %.4f, %.1f s", epoch + 1, t.epochs, losses["loss"], seconds)
            row = {"epoch": epoch + 1, "input_size": dataset.input_size, "pairs": dataset.pairs, "lr_backbone": lrs[0],
                   "lr_head": lrs[1], **losses,
                   "epoch_s": round(seconds, 2), "epoch_cpu_s": round(time.process_time() - cpu_tick, 2),
                   "samples_per_s": round(len(loader) * t.batch_size / seconds, 2)}
            if validation is not None and (epoch + 1) % t.val_every == 0:
                summary = _validate(model, validation, run, env, epoch + 1)
                row.update({f"val_{k}": v for k, v in summary.items() if k != "samples"})
                if env.is_main:
                    log.info("epoch %d validation: %s", epoch + 1, format_summary(summary))
            metric = row.get("val_mIoU", -losses["loss"] if validation is None else None)
            improved = metric is not None and metric > best
            best = max(best, metric) if metric is not None else best
            best_epoch = epoch + 1 if improved else best_epoch
            if env.is_main:
                train_log.epoch(row)
                kwargs = dict(epoch=epoch + 1, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                              best_metric=best, best_epoch=best_epoch, metrics=row)
                if core.category_loss is not None:
                    kwargs["category_loss"] = core.category_loss.state_dict()
                save_epoch(output_dir, model, run, improved, **kwargs)
        return TrainResult(output_dir, t.epochs - start_epoch, best, row, time.time() - started,
                           time.process_time() - cpu_started)
    finally:
        if train_log is not None:
            train_log.close()
        distributed.cleanup()
