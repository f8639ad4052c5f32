"""``cris-eval``: measure a model with the official CRIS test protocol.

Every sentence is predicted separately; its mask (threshold 0.35, at the image's original
resolution) is scored against the referent's mask. Reports mIoU, overall IoU and Prec@0.5..0.9.

    cris-eval --dataset synthetic --num-samples 200               # the shipped demo model
    cris-eval --checkpoint exp/cris_r50/best.pth --split val --data-root datasets
    cris-eval --checkpoint cris_r50.pth --config cris_r50_refcoco --lmdb datasets/lmdb/refcoco/testA.lmdb
    cris-eval --engine bundles/r50_fp16 --dataset refcoco --split val --data-root datasets  # a bundle
    cris-eval --engine bundles/demo_fp32 --num-samples 200   # a bundle's card names its dataset
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..data.sources import DATASETS
from ..data.synthetic import HELD_OUT_SEED_OFFSET
from ..paths import atomic_output, check_not_input, check_writable, remove_stale_temporaries
from ..runtime.backends import BACKENDS
from .common import UsageError, run_command
from ..extras import missing_extra


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cris-eval", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 2)[2])
    model = parser.add_argument_group("model")
    model.add_argument("--checkpoint", help="PyTorch checkpoint (ours, official or a state dict); "
                                            "default: the shipped demo model")
    model.add_argument("--config", help="config name or path, where the weights cannot tell the "
                                        "architecture (word_len, input_size, num_head)")
    model.add_argument("--engine", help="a deployed model instead: bundle directory, .engine or .onnx, run "
                                        "through cris_edge.Segmenter exactly as deployed")
    model.add_argument("--backend", default="auto", choices=BACKENDS,
                       help="with --engine: the runtime backend (default: the best available)")
    model.add_argument("--device", help="cpu, cuda or cuda:N, or with --engine openvino:NAME (an "
                       "OpenVINO device; default: cuda when available)")
    data = parser.add_argument_group("data (defaults from the checkpoint's config, or the bundle's model card)")
    data.add_argument("--dataset", choices=DATASETS, help="refer-format dataset, or synthetic scenes (with --engine: "
                                                          "default the dataset its model card records; required "
                                                          "where it has none)")
    data.add_argument("--split", help="train, val, testA, testB or test (default: val)")
    data.add_argument("--split-by", choices=("unc", "umd", "google"), help="refcocog: umd (default) or google")
    data.add_argument("--data-root", help="refer-format root: <root>/<dataset>/refs(...).p, <root>/images/train2014")
    data.add_argument("--lmdb", help="a CRIS.pytorch LMDB file instead of the refer format")
    data.add_argument("--seed", type=int, default=HELD_OUT_SEED_OFFSET,
                      help=f"synthetic: first scene seed (default {HELD_OUT_SEED_OFFSET}, never used in training)")
    data.add_argument("--num-samples", type=int, default=500, help="synthetic: number of scenes (default 500)")
    run = parser.add_argument_group("run")
    run.add_argument("--limit", type=int, help="evaluate only the first N referents (quick checks)")
    run.add_argument("--json", metavar="OUT", help="write the metrics as JSON (fractions in [0, 1])")
    run.add_argument("--batch-size", type=int, default=32, help="sentences per forward pass (default 32)")
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_command("cris-eval", build_parser(), _main, argv)


def _main(args) -> int:
    if args.engine and args.checkpoint:
        raise UsageError("give --checkpoint or --engine, not both")
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit must be >= 1, got {args.limit}")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.num_samples < 1:
        raise UsageError(f"--num-samples must be >= 1, got {args.num_samples}")
    if args.json:  # before any work: an unwritable --json fails now, not after the evaluation
        check_writable(args.json, "--json")
        check_not_input(args.json, (args.checkpoint, args.config, args.lmdb, args.engine), "--json")
    missing = None if args.engine else missing_extra("torch", "evaluating a PyTorch checkpoint (--engine BUNDLE "
                                                              "evaluates a deployed model without it)")
    if missing:
        raise UsageError(missing)
    from ..data.sources import open_records
    from ..eval.evaluate import evaluate
    from ..eval.metrics import PREC_THRESHOLDS

    model, device, predictor, saved = _predictor(args)
    if args.engine and not (args.dataset or args.lmdb or saved.get("dataset")):
        raise UsageError(f"--engine {args.engine}: the bundle's model records no training dataset, so give --dataset "
                         f"({', '.join(DATASETS)}) or --lmdb")
    dataset = args.dataset or saved.get("dataset", "refcoco")
    records = open_records(
        dataset, args.split or saved.get("val_split", "val"),
        data_root=args.data_root or saved.get("data_root", "datasets"), lmdb=args.lmdb,
        split_by=args.split_by or saved.get("split_by"), seed_offset=args.seed,
        num_samples=args.num_samples, synthetic=saved.get("synthetic"))
    count = min(len(records), args.limit or len(records))
    what = (f"LMDB {args.lmdb}" if args.lmdb else
            f"synthetic scenes, seeds {args.seed}..{args.seed + count - 1}" if dataset == "synthetic"
            else f"{dataset} {args.split or saved.get('val_split', 'val')}")
    print(f"cris-eval: {model} on {what} ({count} referents, {device})", file=sys.stderr)
    summary = evaluate(predictor, records, range(count)).summary()
    for key in ("mIoU", "oIoU", *(f"Prec@{t:.1f}" for t in PREC_THRESHOLDS)):
        print(f"{key:<9} {summary[key]:.4f}")
    print(f"{'samples':<9} {summary['samples']}")
    if args.json:
        remove_stale_temporaries(args.json)  # of evaluations killed while writing it
        with atomic_output(args.json) as tmp:
            tmp.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


def _predictor(args):
    """``(what is measured, where it runs, predictor, the model's saved data settings)``: a
    deployed model or a PyTorch checkpoint (default: the shipped demo model), both through the
    runtime's `Segmenter`. A bundle's only data setting is its model card's ``dataset``; the rest
    comes from the flags."""
    from ..eval.predictor import SegmenterPredictor

    if args.engine:
        predictor = SegmenterPredictor.from_engine(args.engine, args.backend, args.device)
        segmenter = predictor.segmenter
        card = segmenter.card
        saved = {"dataset": card.dataset} if card is not None and card.dataset else {}
        return f"{args.engine} ({segmenter.model}, {segmenter.precision})", segmenter.backend, predictor, saved
    from ..assets import demo_checkpoint
    from ..runtime.backends.pytorch import TorchBackend
    from ..runtime.device import parse_device
    from ..runtime.segmenter import Segmenter

    checkpoint = Path(args.checkpoint) if args.checkpoint else demo_checkpoint()
    backend = TorchBackend.from_checkpoint(checkpoint, args.config, parse_device(args.device), args.batch_size)
    predictor = SegmenterPredictor(Segmenter.from_backend(backend, "a PyTorch checkpoint was given"))
    return checkpoint, str(backend.device), predictor, dict(backend.model.config.extra.get("data") or {})


if __name__ == "__main__":
    sys.exit(main())
