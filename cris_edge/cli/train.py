"""``cris-train``: train CRIS with the official recipe (CPU, one GPU, or torchrun for DDP).

    cris-train --config cris_r50_refcoco --clip-weights RN50.pt data.data_root=datasets
    torchrun --nproc_per_node 4 -m cris_edge.cli.train --config cris_r50_refcoco --clip-weights RN50.pt
    cris-train --config cris_tiny masksd=true train.epochs=5 --output-dir exp/tiny_sd
    cris-train --config cris_tiny --output-dir exp/tiny --resume          # continue exp/tiny/last.pth
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from ..paths import check_writable
from .common import UsageError, run_command
from ..extras import missing_extra


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cris-train", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Overrides are key=value with the config's keys: a model field (input_size=320), "
               "section.field (train.epochs=10, data.data_root=/data, masksd.image_ratio=0.3) or "
               "a section (masksd=true). Values are YAML.")
    parser.add_argument("--config", required=True, help="config name in configs/ (cris_r50_refcoco) or YAML/JSON path")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    parser.add_argument("--clip-weights", help="OpenAI CLIP weights to start the backbone from (RN50.pt)")
    parser.add_argument("--output-dir", help="where checkpoints and logs go (default: exp/<config name>)")
    parser.add_argument("--resume", nargs="?", const="last", metavar="CHECKPOINT",
                        help="continue a run: a last.pth, or no value for <output-dir>/last.pth")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_command("cris-train", build_parser(), _main, argv, intermixed=True)


def _main(args) -> int:
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    missing = missing_extra("train", "training", ("torch",))
    if missing:
        raise UsageError(missing)
    from ..train.config import load_run_config
    from ..train.loop import train

    run = load_run_config(args.config, args.overrides)
    output_dir = Path(args.output_dir or Path("exp") / run.name)
    check_writable(output_dir, "--output-dir", kind="directory")
    resume = output_dir / "last.pth" if args.resume == "last" else args.resume
    if resume is not None and not Path(resume).is_file():
        raise FileNotFoundError(f"nothing to resume: {resume} does not exist")
    if args.clip_weights is not None and not Path(args.clip_weights).is_file():
        raise FileNotFoundError(f"--clip-weights {args.clip_weights} does not exist")
    result = train(run, output_dir, clip_weights=args.clip_weights, resume=resume, device=args.device)
    if rank == 0:
        print(f"trained {result.epochs_run} epoch(s) in {result.seconds:.0f} s; best metric "
              f"{result.best_metric:.4f}; checkpoints in {result.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
