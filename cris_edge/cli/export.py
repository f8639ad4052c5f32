"""``cris-export``: a CRIS checkpoint to a deployment bundle (ONNX graphs, TensorRT engines).

    cris-export --precision fp16                                  # the shipped demo model
    cris-export --checkpoint exp/best.pth --config cris_r50_refcoco --precision int8 --output bundles/r50_int8
    cris-export --engine-only bundles/r50_int8                    # on the target device
    cris-export --bundle bundles/r50_fp16 --triton-repository triton_models   # for Triton on a GPU server
    cris-export --zeroshot --clip ViT-B-32.pt --precision fp16 --output bundles/vitb32_zs   # zero-shot
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from ..paths import check_writable
from .common import UsageError, run_command
from ..extras import missing_extra


def _parser() -> argparse.ArgumentParser:
    # --precision is required unless --engine-only is given (checked in _check_options): the usage says so.
    usage = ("%(prog)s (--precision {fp32,fp16,int8} | --engine-only BUNDLE) [--checkpoint CHECKPOINT]\n"
             "                   [--config CONFIG] [--output OUTPUT] [other options below]\n"
             "       %(prog)s --bundle BUNDLE --triton-repository DIR [--triton-platform PLATFORM]")
    p = argparse.ArgumentParser(prog="cris-export", description=__doc__.replace("``", ""), usage=usage,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, help="CRIS checkpoint (official, ours or a state dict); "
                   "default: the shipped demo model")
    p.add_argument("--config", help="config name or YAML/JSON path (default: the checkpoint's own, or inferred)")
    p.add_argument("--precision", choices=("fp32", "fp16", "int8"), help="precision baked into the graphs")
    p.add_argument("--calib", default="synthetic", metavar="DATASET",
                   help="calibration data: synthetic (default), a refer dataset under --data-root (refcoco, "
                   "refcoco+, refcocog_u, ...) or a CRIS.pytorch LMDB file; FP16 scans its first 16 pairs")
    p.add_argument("--calib-split", default="train", help="split of a refer dataset (default: train)")
    p.add_argument("--data-root", default="datasets", help="root of refer datasets (default: datasets)")
    p.add_argument("--calib-size", type=int, default=128, help="calibration (image, text) pairs (default: 128)")
    p.add_argument("--int8-placement", choices=("tensorrt", "onnxruntime"), default="tensorrt",
                   help="where INT8 Q/DQ nodes go and their types: for TensorRT engines (default, symmetric "
                   "int8), or for CPU runtimes, ONNX Runtime and OpenVINO (uint8 activations; see docs/int8.md)")
    p.add_argument("--head-output", choices=("logits", "features", "plugin"), default="logits",
                   help="head graph outputs: logits (runs anywhere), features (z_v + kernel for the fused "
                   "SimUpsample kernel after the engine) or plugin (the SimUpsample TensorRT plugin node); "
                   "default: logits")
    p.add_argument("--plugin-library", type=Path, help="libcris_edge_trt_plugin.so for --head-output plugin "
                   "(default: $CRIS_EDGE_TRT_PLUGIN, else build/ of the checkout)")
    p.add_argument("--max-batch", type=int, help="largest batch of the engines' optimisation profile "
                   "(default 8; with --engine-only, the bundle's)")
    p.add_argument("--output", type=Path, help="bundle directory (default: bundles/<checkpoint>_<precision>, "
                   "INT8: bundles/<checkpoint>_int8_<placement>)")
    p.add_argument("--engine-only", type=Path, metavar="BUNDLE",
                   help="build the TensorRT engines of an existing bundle on this machine")
    p.add_argument("--triton-repository", type=Path, metavar="DIR",
                   help="write --bundle as a Triton model repository for GPU servers (docs/serving.md): the graphs "
                   "as TensorRT plans or ONNX, a Python-backend model for the rest; DIR must be new or empty")
    p.add_argument("--bundle", type=Path, help="the bundle that --triton-repository writes")
    p.add_argument("--triton-platform", choices=("tensorrt", "onnxruntime"),
                   help="graphs of the repository: the bundle's TensorRT engines, or its ONNX graphs for Triton's "
                   "ONNX Runtime backend (default: tensorrt when the bundle has engines)")
    p.add_argument("--triton-instances", type=int, default=1, help="instances of each repository model (default 1)")
    p.add_argument("--no-engines", action="store_true", help="write the ONNX bundle only, even where "
                   "TensorRT and a GPU are present")
    p.add_argument("--workspace", type=int, default=1024, metavar="MIB", help="TensorRT workspace limit (default: 1024)")
    p.add_argument("--cache-dir", type=Path, help="calibration and timing caches "
                   "(default: $CRIS_EDGE_CACHE, else $XDG_CACHE_HOME/cris_edge, else ~/.cache/cris_edge)")
    p.add_argument("--accuracy-samples", type=int, metavar="N", help="INT8: score the bundle against the FP32 "
                   "graphs on N held-out samples after the export (synthetic calibration: held-out scenes; a refer "
                   "dataset: its val split) and print the mIoU change next to the sizes (default: 16)")
    p.add_argument("--no-accuracy-check", action="store_true", help="INT8: skip that accuracy check")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    zs = p.add_argument_group("zero-shot Global-Local CLIP (--zeroshot; docs/zeroshot-device.md)")
    zs.add_argument("--zeroshot", action="store_true", help="export a zero-shot bundle from CLIP weights (--clip) "
                    "instead of a CRIS checkpoint")
    zs.add_argument("--clip", help="CLIP weights: a file (OpenAI archive, state dict, open_clip checkpoint) or a name "
                    "(openai:ViT-B-32, ...)")
    zs.add_argument("--max-proposals", type=int, help="proposals per pass of the TensorRT engines (default 64)")
    zs.add_argument("--alpha", type=float, default=0.95, help="weight of the global visual feature (default 0.95; "
                    "0.85 for RefCOCOg, as the official code; 1 skips the local branch)")
    zs.add_argument("--beta", type=float, default=0.5, help="weight of the sentence against its noun phrase "
                    "(default 0.5)")
    zs.add_argument("--noun-phrase", choices=("spacy", "rules"), default="spacy",
                    help="noun-phrase extractor on the device: spacy where installed, else the rules (default), "
                    "or always the rules")
    zs.add_argument("--spacy", default="en_core_web_sm", metavar="PIPELINE", help="spaCy pipeline "
                    "(default en_core_web_sm)")
    zs.add_argument("--proposals", choices=("builtin", "none"),
                    help="proposal generator run when a call gives none: builtin (the synthetic scenes' colour "
                    "regions) or none (the caller passes proposals; the default, except for the shipped CLIP)")
    return p


def _sizes(bundle: Path, config) -> str:
    """The files of ``config`` (a `cris_edge.bundle.Bundle`) and their sizes, as printed lines."""
    rows = [f"  {name:<34} {meta.bytes / 2**20:9.2f} MiB" for name, meta in config.files.items()]
    total = sum(meta.bytes for meta in config.files.values())
    return "\n".join([f"bundle {bundle} ({config.precision}):", *rows, f"  {'total':<34} {total / 2**20:9.2f} MiB"])


def _int8_summary(result) -> Optional[str]:
    """One line for an INT8 export: its graphs' size next to the FP32 graphs', and the accuracy
    check (`cris_edge.bundle.Int8Accuracy`) or why it did not run."""
    int8 = result.config.precision_details.int8
    if int8 is None:
        return None
    graphs = sum(meta.bytes for name, meta in result.config.files.items() if name.endswith(".onnx"))
    sizes = f"INT8 graphs {graphs / 2**20:.2f} MiB (FP32 {result.fp32_bytes / 2**20:.2f} MiB)"
    checked = int8.accuracy
    if checked is None:
        return f"{sizes}; accuracy not checked" + (f": {result.accuracy_note}" if result.accuracy_note else "")
    return (f"{sizes}; mIoU on {checked.samples} held-out samples ({checked.pairs} sentences, {checked.data}): "
            f"FP32 {checked.miou_fp32:.2f} -> INT8 {checked.miou_int8:.2f} % "
            f"({checked.miou_int8 - checked.miou_fp32:+.2f} points); INT8 masks vs FP32: mean IoU "
            f"{checked.iou_vs_fp32:.3f}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_command("cris-export", _parser(), _main, argv)


def _check_options(args) -> None:
    """Every option's value and the output, before any work (a bad one is one line, exit 2)."""
    for option, value in (("--max-batch", args.max_batch), ("--workspace", args.workspace),
                          ("--calib-size", args.calib_size), ("--accuracy-samples", args.accuracy_samples)):
        if value is not None and value < 1:
            raise UsageError(f"{option} must be >= 1, got {value}")
    if args.cache_dir is not None:
        check_writable(args.cache_dir, "--cache-dir", kind="directory")
    if args.zeroshot:
        return _check_zeroshot(args)
    if args.clip is not None or args.max_proposals is not None or args.proposals is not None:
        raise UsageError("--clip, --max-proposals and --proposals are for --zeroshot")
    if (args.triton_repository is None) != (args.bundle is None):
        raise UsageError("--triton-repository and --bundle go together: cris-export --bundle BUNDLE "
                         "--triton-repository DIR")
    if args.triton_repository is not None:
        if args.triton_instances < 1:
            raise UsageError(f"--triton-instances must be >= 1, got {args.triton_instances}")
        from cris_edge.export.staging import check_output

        check_output(args.triton_repository, "--triton-repository")
        return
    if args.engine_only is not None:
        return
    _check_precision(args)
    if args.checkpoint is not None and not args.checkpoint.is_file():
        raise FileNotFoundError(f"--checkpoint {args.checkpoint} does not exist")
    from cris_edge.export.staging import check_output

    check_output(_output(args), "--output")


def _check_precision(args) -> None:
    if args.precision is None:
        raise UsageError("--precision is required (fp32, fp16 or int8) unless --engine-only is given")
    if args.accuracy_samples is not None and (args.precision != "int8" or args.no_accuracy_check):
        raise UsageError("--accuracy-samples goes with --precision int8, without --no-accuracy-check")


def _check_zeroshot(args) -> None:
    if args.engine_only is not None or args.checkpoint is not None or args.config is not None:
        raise UsageError("--zeroshot exports --clip; --checkpoint, --config and --engine-only are for CRIS bundles "
                         "(cris-export --engine-only BUNDLE builds a zero-shot bundle's engines too)")
    if args.clip is None:
        from cris_edge.assets import zeroshot_clip

        args.clip = str(zeroshot_clip())
        if args.proposals is None:
            args.proposals = "builtin"
        print(f"cris-export: --zeroshot without --clip: the shipped tiny CLIP of the synthetic scenes ({args.clip}), "
              f"proposals {args.proposals}", file=sys.stderr)
    if args.proposals is None:
        args.proposals = "none"
    _check_precision(args)
    for option, value in (("--alpha", args.alpha), ("--beta", args.beta)):
        if not 0.0 <= value <= 1.0:
            raise UsageError(f"{option} must be in [0, 1], got {value}")
    if args.max_proposals is not None and args.max_proposals < 1:
        raise UsageError(f"--max-proposals must be >= 1, got {args.max_proposals}")
    if args.max_batch is not None:
        raise UsageError("--zeroshot: give --max-proposals, not --max-batch")
    from cris_edge.export.staging import check_output

    check_output(_output(args), "--output")


def _output(args) -> Path:
    # An INT8 bundle's name carries its Q/DQ placement: exporting the other placement next does not
    # silently replace the first.
    suffix = f"{args.precision}_{args.int8_placement}" if args.precision == "int8" else args.precision
    if args.zeroshot:
        return args.output or Path("bundles") / f"{Path(args.clip).stem.replace(':', '_')}_zeroshot_{suffix}"
    stem = args.checkpoint.stem if args.checkpoint else "cris_tiny_synthetic"
    return args.output or Path("bundles") / f"{stem}_{suffix}"


def _main(args) -> int:
    _check_options(args)
    if args.triton_repository is not None:
        return _triton_repository(args)
    if args.engine_only is None:
        missing = missing_extra("export", "exporting a model")
        if missing:
            raise UsageError(missing)
    if args.engine_only is not None:
        return _engine_only(args)
    return _export_zeroshot(args) if args.zeroshot else _export(args)


def _triton_repository(args) -> int:
    from cris_edge.export.triton_repository import write_triton_repository

    out = write_triton_repository(args.bundle, args.triton_repository, args.triton_platform, args.triton_instances)
    models = sorted(p.name for p in out.iterdir())
    print(f"Triton model repository {out}: models {', '.join(models)} (docs/serving.md gives the docker run line)")
    return 0


def _engine_only(args) -> int:
    from cris_edge.export.engines import build_bundle_engines
    from cris_edge.paths import cache_dir

    config = build_bundle_engines(args.engine_only, args.max_batch, args.workspace,
                                  args.cache_dir or cache_dir(), progress=not args.quiet,
                                  plugin_library=args.plugin_library)
    print(_sizes(args.engine_only, config))
    return 0


def _calibration(args):
    """The calibration set of --calib*, its pairs read now (not after the graphs are exported)."""
    from cris_edge.export.calibration import CalibrationSpec
    from cris_edge.export.pipeline import OVERFLOW_SCAN_SAMPLES

    calibration = CalibrationSpec(args.calib, args.calib_size, split=args.calib_split, data_root=args.data_root)
    if args.precision != "fp32":
        (calibration if args.precision == "int8" else calibration.scan(OVERFLOW_SCAN_SAMPLES)).check()
    return calibration


def _accuracy_samples(args) -> int:
    from cris_edge.export.pipeline import ACCURACY_SAMPLES

    return 0 if args.no_accuracy_check else args.accuracy_samples or ACCURACY_SAMPLES


def _report(result) -> int:
    print(_sizes(result.bundle, result.config))
    summary = _int8_summary(result)
    if summary:
        print(summary)
    print("stage times (s): " + ", ".join(f"{k} {v}" for k, v in result.timings.items()))
    if result.engine_note:
        print(result.engine_note)
    return 0


def _export(args) -> int:
    from cris_edge.export.pipeline import DEFAULT_MAX_BATCH, ExportOptions, export_bundle
    from cris_edge.paths import cache_dir

    options = ExportOptions(
        output=_output(args), precision=args.precision,
        checkpoint=args.checkpoint, config=args.config,
        calibration=_calibration(args),
        int8_placement=args.int8_placement,
        head_output=args.head_output, plugin_library=args.plugin_library,
        max_batch=DEFAULT_MAX_BATCH if args.max_batch is None else args.max_batch, workspace_mib=args.workspace,
        cache_dir=args.cache_dir or cache_dir(), build_engines=not args.no_engines,
        progress=not args.quiet, accuracy_samples=_accuracy_samples(args))
    return _report(export_bundle(options))


def _export_zeroshot(args) -> int:
    from cris_edge.export.zeroshot_pipeline import DEFAULT_MAX_PROPOSALS, ZeroShotExportOptions, export_zeroshot
    from cris_edge.paths import cache_dir

    return _report(export_zeroshot(ZeroShotExportOptions(
        clip=args.clip, output=_output(args), precision=args.precision, alpha=args.alpha, beta=args.beta,
        max_proposals=args.max_proposals or DEFAULT_MAX_PROPOSALS, noun_phrase=args.noun_phrase,
        spacy_pipeline=args.spacy, proposals=None if args.proposals == "none" else args.proposals,
        calibration=_calibration(args), int8_placement=args.int8_placement,
        accuracy_samples=_accuracy_samples(args), workspace_mib=args.workspace,
        cache_dir=args.cache_dir or cache_dir(), build_engines=not args.no_engines, progress=not args.quiet)))


if __name__ == "__main__":
    sys.exit(main())
