"""Make the shipped demo model: train ``cris_tiny`` on synthetic scenes, measure it on held-out
scenes, and write it to ``cris_edge/assets``.

    python -m cris_edge.train.demo_model                 # the documented command

Steps: `train` with the recipe in ``configs/cris_tiny.yaml`` (fixed seed, CPU); the official
test protocol on ``--eval-samples`` scenes from ``HELD_OUT_SEED_OFFSET`` (seeds never used in
training); then the asset files:

* ``cris_tiny_synthetic.pth``: our checkpoint format (config included), weights stored in
  float16 (`load_cris` casts them to float32). The token-embedding rows of the 49408 CLIP tokens
  that never occur in the synthetic sentences are never updated by training (their gradient is
  exactly zero), so they hold nothing but their random initialisation: they are stored as
  zeros, and the checkpoint's zip entries are deflate-compressed, which is what brings the file
  under 10 MB (``torch.load`` reads compressed entries; ``mmap=True`` loading does not apply).
  The metrics are measured on this packed file.
* ``cris_tiny_synthetic.json``: metrics, command, seed, sha256, size, training time and the
  machine load while training.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform
import shlex
import sys
import time
import zipfile
from pathlib import Path

import torch

from ..assets import DEMO_CHECKPOINT
from ..data.sources import open_records
from ..data.synthetic import HELD_OUT_SEED_OFFSET
from ..eval.evaluate import evaluate
from ..eval.predictor import SegmenterPredictor
from ..model import CRIS, load_cris
from ..model.checkpoint import FORMAT, FORMAT_VERSION, read_file
from ..paths import atomic_output, write_atomically
from .config import RunConfig, load_run_config
from .loop import train

ASSETS = Path(__file__).resolve().parents[1] / "assets"
#: The card's one-line summary and limits (``cris-export`` records them in a bundle's ``card``).
DEMO_SUMMARY = "CRIS tiny (4 MB, CPU-trained) on synthetic scenes of coloured shapes"
DEMO_LIMITS = 'knows only synthetic shapes and colours ("the red circle on the left"), not real photographs'


def untrained_rows(trained: torch.Tensor, initial: torch.Tensor) -> torch.Tensor:
    """bool ``[V]``: embedding rows equal to their initial values (never updated)."""
    return (trained == initial).all(dim=1)


def pack_state(model: CRIS, run: RunConfig) -> tuple[dict, int]:
    """``(float16 state dict with never-trained token rows zeroed, number of such rows)``.

    The initial weights are rebuilt from the run's seed exactly as `train` built them."""
    torch.manual_seed(run.train.seed)
    initial = CRIS(run.model).backbone.token_embedding.weight.detach()
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    key = "backbone.token_embedding.weight"
    unused = untrained_rows(state[key], initial)
    state[key][unused] = 0
    return {k: v.half() if v.is_floating_point() else v for k, v in state.items()}, int(unused.sum())


def write_deflated(path: Path, payload: dict) -> None:
    """``torch.save(payload)`` with deflate-compressed zip entries, written atomically."""
    buffer, deflated = io.BytesIO(), io.BytesIO()
    torch.save(payload, buffer)
    buffer.seek(0)
    with zipfile.ZipFile(buffer) as src, zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, deflated.getvalue())


def host_record(load_before: tuple, load_after: tuple) -> dict:
    """Where a shipped model was trained: threads, CPUs, load averages around the run, machine, torch."""
    return {"threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in load_after],
            "machine": platform.processor() or platform.machine(), "torch": torch.__version__}


def write_card(checkpoint: Path, card: dict) -> None:
    """Write ``card`` as ``<checkpoint>.json`` (atomically) and print it."""
    with atomic_output(checkpoint.with_suffix(".json")) as partial:
        partial.write_text(json.dumps(card, indent=2) + "\n")
    print(json.dumps(card, indent=2))


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def measure(checkpoint: Path, num_samples: int) -> dict:
    """The held-out metrics of ``checkpoint`` (as ``cris-eval --num-samples N`` prints them)."""
    model = load_cris(checkpoint)
    records = open_records("synthetic", seed_offset=HELD_OUT_SEED_OFFSET, num_samples=num_samples,
                           synthetic=model.config.extra.get("data", {}).get("synthetic"))
    return evaluate(SegmenterPredictor.from_model(model), records, desc="held-out").summary()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cris_edge.train.demo_model", description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides (for experiments)")
    parser.add_argument("--output-dir", default="exp/demo_model", help="training run directory")
    parser.add_argument("--assets", default=str(ASSETS), help="where the demo model files go")
    parser.add_argument("--eval-samples", type=int, default=500, help="held-out scenes to measure (default 500)")
    args = parser.parse_args(argv)
    run = load_run_config("cris_tiny", args.overrides)
    load_before = os.getloadavg()
    result = train(run, args.output_dir, device="cpu")
    load_after = os.getloadavg()
    trained = load_cris(Path(args.output_dir) / "last.pth")
    state, zeroed = pack_state(trained, run)
    target = Path(args.assets) / DEMO_CHECKPOINT
    source = read_file(Path(args.output_dir) / "last.pth")
    write_deflated(target, {"format": FORMAT, "format_version": FORMAT_VERSION, "config": source["config"],
                            "state_dict": state, "epoch": source["epoch"], "metrics": source["metrics"]})
    metrics = measure(target, args.eval_samples)
    command = "python -m cris_edge.train.demo_model" + "".join(f" {shlex.quote(o)}" for o in args.overrides)
    card = {
        "name": Path(DEMO_CHECKPOINT).stem, "summary": DEMO_SUMMARY, "limits": DEMO_LIMITS,
        "file": DEMO_CHECKPOINT, "sha256": sha256(target), "bytes": target.stat().st_size,
        "config": "cris_tiny", "seed": run.train.seed, "command": command,
        "held_out": {"dataset": "synthetic", "first_seed": HELD_OUT_SEED_OFFSET,
                     "scenes": args.eval_samples, **metrics},
        "training": {"wall_seconds": round(result.seconds, 1), "cpu_seconds": round(result.cpu_seconds, 1),
                     "epochs": result.epochs_run, "final_loss": result.last_metrics.get("loss"),
                     **host_record(load_before, load_after)},
        "storage": {"dtype": "float16", "zeroed_token_rows": zeroed, "zip": "deflate"},
        "made": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    write_card(target, card)
    return 0


if __name__ == "__main__":
    sys.exit(main())
