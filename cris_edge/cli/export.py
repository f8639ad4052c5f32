"""``cris-export``: a CRIS checkpoint to a deployment bundle (ONNX graphs, TensorRT engines).

    cris-export --precision fp16                                  # the shipped demo model
    cris-export --checkpoint exp/best.pth --config cris_r50_refcoco --precision int8 --output bundles/r50_int8
    cris-export --engine-only bundles/r50_int8                    # on the target device
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
             "                   [--config CONFIG] [--output OUTPUT] [other options below]")
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
    p.add_argument("--no-engines", action="store_true", help="write the ONNX bundle only, even where "
                   "TensorRT and a GPU are present")
    p.add_argument("--workspace", type=int, default=1024, metavar="MIB", help="TensorRT workspace limit (default: 1024)")
    p.add_argument("--cache-dir", type=Path, help="calibration and timing caches "
                   "(default: $CRIS_EDGE_CACHE, else $XDG_CACHE_HOME/cris_edge, else ~/.cache/cris_edge)")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    return p


def _sizes(bundle: Path, config) -> str:
    """The files of ``config`` (a `cris_edge.bundle.Bundle`) and their sizes, as printed lines."""
    rows = [f"  {name:<34} {meta.bytes / 2**20:9.2f} MiB" for name, meta in config.files.items()]
    total = sum(meta.bytes for meta in config.files.values())
    return "\n".join([f"bundle {bundle} ({config.precision}):", *rows, f"  {'total':<34} {total / 2**20:9.2f} MiB"])


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_command("cris-export", _parser(), _main, argv)


def _check_options(args) -> None:
    """Every option's value and the output, before any work (a bad one is one line, exit 2)."""
    for option, value in (("--max-batch", args.max_batch), ("--workspace", args.workspace),
                          ("--calib-size", args.calib_size)):
        if value is not None and value < 1:
            raise UsageError(f"{option} must be >= 1, got {value}")
    if args.cache_dir is not None:
        check_writable(args.cache_dir, "--cache-dir", kind="directory")
    if args.engine_only is not None:
        return
    if args.precision is None:
        raise UsageError("--precision is required (fp32, fp16 or int8) unless --engine-only is given")
    if args.checkpoint is not None and not args.checkpoint.is_file():
        raise FileNotFoundError(f"--checkpoint {args.checkpoint} does not exist")
    from cris_edge.export.staging import check_output

    check_output(_output(args), "--output")


def _output(args) -> Path:
    stem = args.checkpoint.stem if args.checkpoint else "cris_tiny_synthetic"
    # An INT8 bundle's name carries its Q/DQ placement: exporting the other placement next does not
    # silently replace the first.
    suffix = f"{args.precision}_{args.int8_placement}" if args.precision == "int8" else args.precision
    return args.output or Path("bundles") / f"{stem}_{suffix}"


def _main(args) -> int:
    _check_options(args)
    if args.engine_only is None:
        missing = missing_extra("export", "exporting a model")
        if missing:
            raise UsageError(missing)
    if args.engine_only is not None:
        return _engine_only(args)
    return _export(args)


def _engine_only(args) -> int:
    from cris_edge.export.engines import build_bundle_engines
    from cris_edge.paths import cache_dir

    config = build_bundle_engines(args.engine_only, args.max_batch, args.workspace,
                                  args.cache_dir or cache_dir(), progress=not args.quiet,
                                  plugin_library=args.plugin_library)
    print(_sizes(args.engine_only, config))
    return 0


def _export(args) -> int:
    from cris_edge.export.calibration import CalibrationSpec
    from cris_edge.export.pipeline import DEFAULT_MAX_BATCH, OVERFLOW_SCAN_SAMPLES, ExportOptions, export_bundle
    from cris_edge.paths import cache_dir

    calibration = CalibrationSpec(args.calib, args.calib_size, split=args.calib_split, data_root=args.data_root)
    if args.precision != "fp32":  # read the calibration pairs now, not after the graphs are exported
        (calibration if args.precision == "int8" else calibration.scan(OVERFLOW_SCAN_SAMPLES)).check()

    options = ExportOptions(
        output=_output(args), precision=args.precision,
        checkpoint=args.checkpoint, config=args.config,
        calibration=calibration,
        int8_placement=args.int8_placement,
        head_output=args.head_output, plugin_library=args.plugin_library,
        max_batch=DEFAULT_MAX_BATCH if args.max_batch is None else args.max_batch, workspace_mib=args.workspace,
        cache_dir=args.cache_dir or cache_dir(), build_engines=not args.no_engines,
        progress=not args.quiet)
    result = export_bundle(options)
    print(_sizes(result.bundle, result.config))
    print("stage times (s): " + ", ".join(f"{k} {v}" for k, v in result.timings.items()))
    if result.engine_note:
        print(result.engine_note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
