"""``cris-eval``: measure a model with the official CRIS test protocol.

Every sentence is predicted separately; its mask (threshold 0.35, at the image's original
resolution) is scored against the referent's mask. Reports mIoU, overall IoU and Prec@0.5..0.9.

    cris-eval --dataset synthetic --num-samples 200               # the shipped demo model
    cris-eval --checkpoint exp/cris_r50/best.pth --split val --data-root datasets
    cris-eval --checkpoint cris_r50.pth --config cris_r50_refcoco --lmdb datasets/lmdb/refcoco/testA.lmdb
    cris-eval --engine bundles/r50_fp16 --dataset refcoco --split val --data-root datasets  # a bundle
    cris-eval --engine bundles/demo_fp32 --num-samples 200   # a bundle's card names its dataset
    cris-eval --method zeroshot --proposals builtin          # zero-shot, the shipped tiny CLIP, synthetic scenes
    cris-eval --method zeroshot --clip ViT-B-32.pt --dataset refcoco --data-root datasets --proposals sam.json

Zero-shot (Global-Local CLIP, docs/zeroshot.md): every sentence picks one of the image's mask
proposals; an image with no proposal counts IoU 0, and the official figure, which skips such
images, is printed beside it.
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
    parser.add_argument("--method", choices=("cris", "zeroshot"), default="cris",
                        help="cris: a CRIS model (default); zeroshot: Global-Local CLIP on mask proposals")
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
    zeroshot = parser.add_argument_group("zero-shot (--method zeroshot)")
    zeroshot.add_argument("--clip", help="CLIP weights (a file or a name, cris_edge.zeroshot.load_clip); default: "
                                         "the shipped tiny CLIP of the synthetic scenes")
    zeroshot.add_argument("--proposals", help="oracle (the dataset's instance masks), builtin (the synthetic "
                                              "scenes' generator) or a COCO results JSON file; default oracle")
    zeroshot.add_argument("--alpha", type=float, help="weight of the global visual feature (default 0.95; 0.85 for "
                                                      "refcocog, as the official code)")
    zeroshot.add_argument("--beta", type=float, default=0.5, help="weight of the sentence against its noun phrase "
                                                                  "(default 0.5)")
    zeroshot.add_argument("--spacy", default="en_core_web_sm", metavar="PIPELINE",
                          help="spaCy pipeline for noun phrases (default en_core_web_sm), or 'none' for the "
                               "rule-based extractor")
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
    if args.method == "zeroshot" or (args.engine and _is_zeroshot_bundle(args.engine)):
        return _zeroshot(args)
    if args.clip or args.proposals or args.alpha is not None:
        raise UsageError("--clip, --proposals and --alpha are for --method zeroshot")
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


def _is_zeroshot_bundle(engine: str) -> bool:
    from ..bundle import BundleError
    from ..runtime.selection import locate

    try:
        files = locate(engine)
    except (BundleError, FileNotFoundError, ValueError):
        return False  # the CRIS path reports it
    return files.is_bundle and files.bundle.kind == "zeroshot"


def _zeroshot(args) -> int:
    """``cris-eval --method zeroshot`` (or ``--engine`` a zero-shot bundle): the zero-shot protocol
    of `cris_edge.eval.zeroshot`, on the PyTorch reference or on a bundle in `Segmenter`."""
    if args.checkpoint or args.config or (args.engine and args.clip):
        raise UsageError("--method zeroshot takes --clip or --engine (a zero-shot bundle), not --checkpoint or "
                         "--config, nor both")
    if args.engine and not _is_zeroshot_bundle(args.engine):
        raise UsageError(f"--engine {args.engine} is not a zero-shot bundle (cris-export --zeroshot makes one)")
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit must be >= 1, got {args.limit}")
    if args.num_samples < 1:
        raise UsageError(f"--num-samples must be >= 1, got {args.num_samples}")
    for name in ("alpha", "beta"):
        value = getattr(args, name)
        if value is not None and not 0.0 <= value <= 1.0:
            raise UsageError(f"--{name} must be in [0, 1], got {value}")
    if args.clip is not None and not (args.dataset or args.lmdb):
        raise UsageError("--clip: give --dataset or --lmdb (the shipped CLIP alone defaults to synthetic scenes)")
    if args.engine and not (args.dataset or args.lmdb):
        args.dataset = _card_dataset(args.engine)
    if args.proposals not in (None, "oracle", "builtin") and not Path(args.proposals).is_file():
        raise UsageError(f"--proposals: no such file {args.proposals} (or give oracle or builtin)")
    if args.json:
        check_writable(args.json, "--json")
        check_not_input(args.json, (args.clip, args.engine, args.lmdb, args.proposals), "--json")
    missing = missing_extra("torch", "the zero-shot method")
    if missing:
        raise UsageError(missing)
    from ..data.sources import open_records
    from ..eval.metrics import PREC_THRESHOLDS
    from ..eval.zeroshot import proposal_source

    dataset = args.dataset or ("synthetic" if not args.lmdb else "lmdb")
    split = args.split or "val"
    records = open_records(dataset, split, data_root=args.data_root or "datasets", lmdb=args.lmdb,
                           split_by=args.split_by, seed_offset=args.seed, num_samples=args.num_samples)
    proposals = args.proposals or "oracle"
    try:
        source = proposal_source(proposals, records)
    except ValueError as err:
        raise UsageError(f"--proposals {proposals}: {err}") from None
    count = min(len(records), args.limit or len(records))
    what = (f"LMDB {args.lmdb}" if args.lmdb else
            f"synthetic scenes, seeds {args.seed}..{args.seed + count - 1}" if dataset == "synthetic" else f"{dataset} {split}")
    run = _zeroshot_bundle if args.engine else _zeroshot_reference
    summary = run(args, records, source, count, f"{what} ({count} referents, proposals: {proposals})", dataset)
    for key in ("mIoU", "oIoU", *(f"Prec@{t:.1f}" for t in PREC_THRESHOLDS)):
        print(f"{key:<9} {summary[key]:.4f}")
    print(f"{'samples':<9} {summary['samples']}")
    print(f"{'no proposals':<9} {summary['pairs_without_proposals']} sentence(s), counted as IoU 0")
    official = summary["official"]
    if official is None:
        print("official  (no image had proposals)")
    else:
        print(f"official  mIoU {official['mIoU']:.4f}  oIoU {official['oIoU']:.4f}  ({official['samples']} sentences; "
              "images without proposals skipped)")
    if args.json:
        remove_stale_temporaries(args.json)
        with atomic_output(args.json) as tmp:
            tmp.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


def _zeroshot_reference(args, records, source, count: int, what: str, dataset: str) -> dict:
    """The PyTorch reference `GlobalLocal` on ``records``: its summary."""
    import torch

    from ..assets import zeroshot_clip
    from ..eval.zeroshot import evaluate_zeroshot
    from ..runtime.device import parse_device
    from ..zeroshot import GlobalLocal, load_clip

    clip_path = args.clip or zeroshot_clip()
    alpha = args.alpha if args.alpha is not None else 0.85 if dataset.startswith("refcocog") else 0.95
    clip = load_clip(clip_path).to(parse_device(args.device) or ("cuda" if torch.cuda.is_available() else "cpu"))
    method = GlobalLocal(clip, alpha, args.beta, spacy_pipeline=None if args.spacy == "none" else args.spacy)
    print(f"cris-eval: zero-shot Global-Local CLIP ({clip_path}, alpha {alpha}, beta {args.beta}, "
          f"{method.backbone}) on {what}", file=sys.stderr)
    return evaluate_zeroshot({"zeroshot": method}, records, source, range(count))["zeroshot"].summary()


def _zeroshot_bundle(args, records, source, count: int, what: str, dataset: str) -> dict:
    """A zero-shot bundle in `Segmenter` on ``records``: the bundle's alpha unless --alpha is
    given, --beta and the noun phrases of --spacy, as for the reference. Its summary."""
    import dataclasses

    from ..eval.zeroshot import evaluate_segmenter
    from ..runtime.segmenter import Segmenter

    with Segmenter(args.engine, args.backend, args.device) as segmenter:
        method = segmenter.method
        segmenter.method = dataclasses.replace(
            method, alpha=method.alpha if args.alpha is None else args.alpha, beta=args.beta,
            noun_phrase="rules" if args.spacy == "none" else "spacy",
            spacy_pipeline=method.spacy_pipeline if args.spacy == "none" else args.spacy)
        print(f"cris-eval: zero-shot bundle {args.engine} ({segmenter.model}, {segmenter.precision}, alpha "
              f"{segmenter.method.alpha}, beta {args.beta}, {method.backbone}) on {segmenter.backend}, {what}",
              file=sys.stderr)
        return evaluate_segmenter(segmenter, records, source, range(count)).summary()


def _card_dataset(engine: str) -> str:
    """The dataset a bundle's model card records, else a UsageError asking for --dataset."""
    from ..runtime.selection import locate

    card = locate(engine).bundle.card
    if card is None or not card.dataset:
        raise UsageError(f"--engine {engine}: the bundle's model card records no dataset, so give --dataset or --lmdb")
    return card.dataset


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
