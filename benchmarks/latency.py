"""CRIS latency under the official protocol, every backend and precision in one run.

    python benchmarks/latency.py                              # the shipped demo model, all combinations
    python benchmarks/latency.py --backends onnxruntime --precisions fp32,int8 --warmup 10 --iters 50
    python benchmarks/latency.py --engine bundles/r50_fp16 --engine bundles/r50_int8 \\
        --checkpoint exp/best.pth --config cris_r50_refcoco --json r50.json --markdown r50.md --plot r50.png

Protocol (the official CRIS one): batch 1, a 416 x 416 model input, 17 text tokens (the model's
word_len), 100 warm-up and 400 timed iterations per row. An iteration is one `Segmenter.run`
(a 480 x 640 BGR frame and its expression in, the uint8 mask at the frame's size out: official
pre-processing, text, visual and head graphs, official post-processing), timed end to end on
the host (perf_counter); stage times are the runtime's own (`SegmentationResult.timings`).
As in the official protocol the text is encoded on every iteration: ``p50_ms`` and the other
headline figures include the text graph. A deployment encodes a prompt once (cached), so every
row also has ``cached_text``: the same loop with the Segmenter's text cache on.

The demo model (``cris_tiny``, native input 384) runs at 416 like any CRIS model: its weights do
not depend on the input size (the attention pool's positions are resized), so the protocol's
input size is kept and its FLOPs are those of a 416 input. ``--input-size`` changes it.

Rows: PyTorch eager FP32 (the baseline, always measured when the checkpoint is known: every
ratio is against it, from the same run), PyTorch FP16 and CUDA graphs (CUDA only), ONNX Runtime
and TensorRT in FP32 / FP16 / INT8. Without ``--engine`` the bundles are exported from the
checkpoint into the cache (``$CRIS_EDGE_CACHE/bundles``) by the real export pipeline, once;
INT8 is placed for the runtime that runs it. Combinations that cannot run here are skipped
with the reason (printed and recorded). Each row runs in its own process, so its peak
resident memory is its own (an ONNX Runtime or TensorRT row never imports torch).

Exit status: 0, 1 when a row failed, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402  (benchmarks/ is not a package)
from latency_report import BASELINE, add_ratios, markdown, plot  # noqa: E402
from latency_worker import PROTOCOL, RowSpec, Settings  # noqa: E402

BACKENDS = {"torch": "pytorch", "pytorch": "pytorch", "onnxruntime": "onnxruntime", "ort": "onnxruntime",
            "tensorrt": "tensorrt", "trt": "tensorrt"}
PRECISIONS = ("fp32", "fp16", "int8")
#: INT8 Q/DQ placement of the bundles this script exports, per runtime (see cris_edge.export.int8).
INT8_PLACEMENT = {"onnxruntime": "onnxruntime", "tensorrt": "tensorrt"}
WORKER = Path(__file__).resolve().parent / "latency_worker.py"


class UsageError(ValueError):
    """A bad argument; the message names it."""


# -- arguments ----------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="benchmarks/latency.py", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--engine", action="append", type=Path, metavar="BUNDLE",
                   help="a bundle directory from cris-export (repeat: one per precision); default: export the "
                        "checkpoint into the cache")
    p.add_argument("--checkpoint", type=Path, help="CRIS checkpoint (default: the shipped demo model; with --engine, "
                   "the demo model when the bundle was exported from it)")
    p.add_argument("--config", help="CRIS config name or file for the checkpoint (default: its own)")
    p.add_argument("--backends", default="torch,onnxruntime,tensorrt",
                   help="comma-separated: torch, onnxruntime, tensorrt (default: all)")
    p.add_argument("--precisions", default="fp32,fp16,int8", help="comma-separated: fp32, fp16, int8 (default: all)")
    p.add_argument("--warmup", type=int, default=PROTOCOL["warmup"], help="warm-up iterations per row (default 100)")
    p.add_argument("--iters", type=int, default=PROTOCOL["iters"], help="timed iterations per row (default 400)")
    p.add_argument("--input-size", type=int, help="model input side S (default 416, the protocol's; a bundle's own "
                   "with --engine)")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: each backend's choice, the GPU when present)")
    p.add_argument("--threads", type=int, help="CPU threads of ONNX Runtime / PyTorch (default: physical cores)")
    p.add_argument("--json", type=Path, help="write the results as JSON here")
    p.add_argument("--markdown", type=Path, help="write the markdown tables here")
    p.add_argument("--plot", type=Path, help="write a PNG bar chart of the per-stage latency here")
    p.add_argument("--zeroshot", action="append", type=Path, metavar="BUNDLE",
                   help="measure zero-shot bundles instead (repeat; see benchmarks/zeroshot_latency.py): per "
                        "backend, precision and --proposals count, with and without the local branch")
    p.add_argument("--proposals", default="8,32,64", help="with --zeroshot: proposal counts (default 8,32,64)")
    return p


def _names(text: str, valid, what: str) -> list[str]:
    """Comma-separated ``text`` -> names (aliases resolved through ``valid`` when a dict)."""
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    if not names:
        raise UsageError(f"--{what} is empty")
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise UsageError(f"unknown {what[:-1]} {', '.join(map(repr, unknown))}: choose from {', '.join(valid)}")
    resolved = [valid[n] if isinstance(valid, dict) else n for n in names]
    return list(dict.fromkeys(resolved))


def _check_counts(args) -> None:
    if args.warmup < 0 or args.iters < 1:
        raise UsageError(f"--warmup must be >= 0 and --iters >= 1 (got {args.warmup}, {args.iters})")
    if args.input_size is not None and (args.input_size < 32 or args.input_size % 32):
        raise UsageError(f"--input-size must be a multiple of 32 (the backbone's stride), got {args.input_size}")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be >= 1, got {args.threads}")


def _read_bundles(paths: Sequence[Path]) -> dict[str, tuple[Path, object]]:
    """``--engine`` bundles (path, `Bundle`) by precision; UsageError for a missing or damaged
    one, or two of one precision."""
    from cris_edge import bundle as bundle_format
    from cris_edge.bundle import BundleError

    found = {}
    for path in paths:
        if not path.exists():
            raise UsageError(f"--engine {path}: no such bundle directory (make one with cris-export --output {path})")
        if not path.is_dir():
            raise UsageError(f"--engine {path}: not a directory; pass the bundle directory cris-export wrote")
        try:
            config = bundle_format.read(path)
        except BundleError as err:
            raise UsageError(f"--engine {path}: {err}") from None
        if config.precision in found:
            raise UsageError(f"--engine: two {config.precision} bundles ({found[config.precision][0]}, {path})")
        found[config.precision] = (path, config)
    sizes = {c.input_size for _, c in found.values()}
    if len(sizes) > 1:
        raise UsageError(f"--engine bundles have different input sizes {sorted(sizes)}: the rows must share one")
    return found


# -- the model ----------------------------------------------------------------------------------
def _checkpoint(args, bundles: dict) -> tuple[Optional[Path], Optional[str]]:
    """(checkpoint, None) or (None, why the PyTorch rows cannot run)."""
    from cris_edge.assets import demo_checkpoint
    from cris_edge.bundle import sha256_file

    if args.checkpoint is not None:
        if not args.checkpoint.is_file():
            raise UsageError(f"--checkpoint {args.checkpoint}: no such file")
        return args.checkpoint, None
    try:
        demo = demo_checkpoint()
    except FileNotFoundError as err:
        if not bundles:
            raise UsageError(f"{err}") from None
        return None, "no --checkpoint given (the PyTorch rows run the checkpoint itself)"
    if not bundles:
        return demo, None
    shas = {c.checkpoint.sha256 for _, c in bundles.values()}
    if shas == {sha256_file(demo)}:
        return demo, None
    return None, "no --checkpoint given, and the bundle was not exported from the shipped demo model"


def _model_config(args, checkpoint: Optional[Path], bundles: dict):
    """The `CRISConfig` of the model: the checkpoint's (or ``--config``), else the bundle's."""
    from cris_edge.model.config import resolve_config

    if checkpoint is not None and _has_torch():
        from cris_edge.model import load_cris
        return load_cris(checkpoint, args.config).config
    if args.config is not None:
        return resolve_config(args.config)
    return resolve_config(dict(next(iter(bundles.values()))[1].model))


def _has_torch() -> bool:
    import importlib.util
    return importlib.util.find_spec("torch") is not None


def _settings(args, bundles: dict, native: int, word_len: int) -> Settings:
    """The run's protocol; its deviations from the official one are recorded (and printed)."""
    size = args.input_size or PROTOCOL["input_size"]
    if bundles:
        bundle_size = next(iter(bundles.values()))[1].input_size
        if args.input_size is not None and args.input_size != bundle_size:
            raise UsageError(f"--input-size {args.input_size}, but the --engine bundles take {bundle_size}")
        size = bundle_size
    settings = Settings(size, args.warmup, args.iters, device=args.device, threads=args.threads)
    if size != PROTOCOL["input_size"]:
        settings.deviations.append(f"input size {size}, not the protocol's {PROTOCOL['input_size']}")
    if size != native:
        settings.notes.append(f"the model's native input size is {native}; it runs at {size} (CRIS weights do not "
                              "depend on the input size)")
    if word_len != PROTOCOL["word_len"]:
        settings.deviations.append(f"the model's word_len is {word_len}, not the protocol's {PROTOCOL['word_len']}")
    if (args.warmup, args.iters) != (PROTOCOL["warmup"], PROTOCOL["iters"]):
        settings.deviations.append(f"{args.warmup} warm-up and {args.iters} timed iterations, not the protocol's "
                              f"{PROTOCOL['warmup']} and {PROTOCOL['iters']}")
    return settings


# -- the rows -----------------------------------------------------------------------------------
def _torch_rows(precisions, checkpoint, config: dict, why_not: Optional[str], device) -> list[RowSpec]:
    """The baseline first, then PyTorch FP16 eager and the CUDA-graph rows (CUDA only)."""
    cuda, reason = _torch_cuda(device)
    rows = []
    for variant in ("eager", "cuda-graph"):
        for precision in precisions:
            row = RowSpec("pytorch", precision, variant, checkpoint=str(checkpoint) if checkpoint else None,
                          model_config=config)
            if why_not:
                row.skip = why_not
            elif precision == "int8":
                row.skip = "PyTorch INT8 is not a cris-edge deployment path (INT8 runs from the bundle's Q/DQ ONNX " \
                           "in ONNX Runtime or TensorRT)"
            elif (precision == "fp16" or variant == "cuda-graph") and not cuda:
                row.skip = f"PyTorch {precision} {variant} needs CUDA: {reason}"
            rows.append(row)
    return rows


def _torch_cuda(device) -> tuple[bool, str]:
    """(whether the PyTorch rows run on CUDA, why not)."""
    if not _has_torch():
        return False, "torch is not installed"
    if device == "cpu":
        return False, "--device cpu"
    import torch
    return (True, "") if torch.cuda.is_available() else (False, "torch.cuda.is_available() is False")


def _bundle_rows(backend: str, precisions, bundles: dict) -> list[RowSpec]:
    """ONNX Runtime or TensorRT rows, skipped where the runtime is absent; ``bundles`` (from
    --engine, by precision) or, when empty, bundles to export (``bundle`` None)."""
    import importlib.util

    rows = []
    for precision in precisions:
        row = RowSpec(backend, precision, placement=INT8_PLACEMENT[backend] if precision == "int8" else None)
        if backend == "onnxruntime" and importlib.util.find_spec("onnxruntime") is None:
            row.skip = "onnxruntime is not installed (pip install onnxruntime, or onnxruntime-gpu)"
        elif backend == "tensorrt" and not bundles:
            from cris_edge.export.tensorrt_build import engine_unavailable_reason
            row.skip = engine_unavailable_reason()
        elif bundles and precision not in bundles:
            row.skip = f"no {precision} bundle given (--engine; given: {', '.join(sorted(bundles))})"
        elif bundles:
            row.bundle = str(bundles[precision][0])
            row.skip = _tensorrt_problem(*bundles[precision]) if backend == "tensorrt" else None
        rows.append(row)
    return rows


def _tensorrt_problem(path: Path, config) -> Optional[str]:
    """Why TensorRT cannot run the bundle at ``path`` (its `Bundle` ``config``) here, or None."""
    from cris_edge.bundle import EngineMismatchError
    from cris_edge.runtime.backends.base import BackendUnavailableError
    from cris_edge.runtime.backends.trt_check import check_tensorrt

    try:
        check_tensorrt(path, config)
    except (BackendUnavailableError, EngineMismatchError) as err:
        return " ".join(str(err).split())
    return None


def plan_rows(backends, precisions, bundles: dict, checkpoint, why_not, config: dict, device) -> list[RowSpec]:
    """Every row of the run in table order; the baseline (PyTorch eager FP32) is always first."""
    torch_precisions = list(dict.fromkeys(["fp32", *precisions])) if "pytorch" in backends else ["fp32"]
    rows = [r for r in _torch_rows(torch_precisions, checkpoint, config, why_not, device)
            if r.key == BASELINE or "pytorch" in backends and r.precision in precisions]
    for backend in ("onnxruntime", "tensorrt"):
        if backend in backends:
            rows += _bundle_rows(backend, precisions, bundles)
    return rows


def export_missing(rows: list[RowSpec], checkpoint: Path, model_config, input_size: int) -> None:
    """Give every runnable bundle row without a bundle one, exported into the cache if need be."""
    from cris_edge.export.cached import cached_bundle

    for row in rows:
        if row.skip is None and row.backend != "pytorch" and row.bundle is None:
            path = cached_bundle(checkpoint, row.precision, model_config, input_size, row.placement,
                                 engines=row.backend == "tensorrt", progress=True)
            row.bundle = str(path)


def run_row(row: RowSpec, settings: Settings) -> dict:
    """Measure ``row`` in a fresh Python process (`latency_worker`); its result dict, or a failed
    row whose ``error`` points at the worker's traceback (printed above, on stderr)."""
    spec = json.dumps({"row": asdict(row), "settings": asdict(settings)})
    env = {**os.environ, "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS", "1")}
    proc = subprocess.run([sys.executable, str(WORKER), spec], env=env,
                          stdout=subprocess.PIPE, text=True)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return {"status": "failed", "error": f"worker exited with status {proc.returncode} (its error is above)"}
    return json.loads(lines[-1])


# -- main ---------------------------------------------------------------------------------------
def prepare(args) -> tuple[list[RowSpec], Settings, dict]:
    """Validate the arguments and plan the rows (bundles exported where needed)."""
    _check_counts(args)
    backends = _names(args.backends, BACKENDS, "backends")
    precisions = _names(args.precisions, PRECISIONS, "precisions")
    bundles = _read_bundles(args.engine or [])
    checkpoint, why_not = _checkpoint(args, bundles)
    if checkpoint is not None and not _has_torch():
        why_not = "torch is not installed (pip install -c constraints.txt -e '.[torch]')"
    cfg = _model_config(args, checkpoint, bundles)
    settings = _settings(args, bundles, cfg.input_size, cfg.word_len)
    model = cfg.replace(input_size=settings.input_size)
    rows = plan_rows(backends, precisions, bundles, checkpoint, why_not, model.to_dict(), args.device)
    if not bundles:
        export_missing(rows, checkpoint, cfg, settings.input_size)
    return rows, settings, {"config": cfg.to_dict().get("name"), "native_input_size": cfg.input_size,
                            "word_len": cfg.word_len, "checkpoint": str(checkpoint) if checkpoint else None}


#: p90/p50 above this says the timings were disturbed (another process, throttling).
BUSY_SPREAD = 1.5


def busy_warnings(row: dict, cores: Optional[int]) -> list[str]:
    """Why ``row``'s numbers may be those of a busy machine: a wide spread (p90/p50 >
    `BUSY_SPREAD`, text per frame or cached) or a 1-minute load average above the core count at
    the start or end of the row (``load_average_start`` / ``_end``). Empty when none."""
    warnings = []
    for name, timing in (("", row), ("cached_text ", row.get("cached_text") or {})):
        p50, p90 = timing.get("p50_ms"), timing.get("p90_ms")
        if p50 and p90 and p90 / p50 > BUSY_SPREAD:
            warnings.append(f"{name}p90/p50 = {p90 / p50:.2f} > {BUSY_SPREAD}: the machine was probably busy, "
                            "rerun on an idle machine")
    for when in ("start", "end"):
        load = row.get(f"load_average_{when}")
        if load and cores and load[0] > cores:
            warnings.append(f"load average {load[0]:.2f} > {cores} cores at the row's {when}: "
                            "other processes competed for the CPU")
    return warnings


def measure(rows: list[RowSpec], settings: Settings) -> tuple[list[dict], list[dict], list[dict]]:
    """(measured, skipped, failed rows), printing each skip's reason and each row's progress."""
    measured, skipped, failed = [], [], []
    runnable = [r for r in rows if r.skip is None]
    for row in rows:
        head = {"backend": row.backend, "variant": row.variant, "precision": row.precision}
        if row.skip:
            common.progress(f"skipping {row.label}: {row.skip}")
            skipped.append({**head, "reason": row.skip})
            continue
        common.progress(f"[{len(measured) + len(failed) + 1}/{len(runnable)}] {row.label}: {settings.warmup} "
                        f"warm-up + {settings.iters} timed iterations, twice (text per frame, text cached)")
        load_start = common.load_average()
        out = {**head, "bundle": row.bundle, **run_row(row, settings)}
        out.update(load_average_start=load_start, load_average_end=common.load_average())
        if out["status"] == "ok":
            out["warnings"] = busy_warnings(out, os.cpu_count())
            out["busy"] = bool(out["warnings"])
            for warning in out["warnings"]:
                common.progress(f"WARNING {row.label}: {warning}")
            measured.append(out)
        else:
            common.progress(f"FAILED {row.label}: {out['error']}")
            failed.append(out)
    return measured, skipped, failed


def _zeroshot(args) -> int:
    """``--zeroshot``: the zero-shot rows of `zeroshot_latency`."""
    import zeroshot_latency

    try:
        _check_counts(args)
        backends = [b for b in _names(args.backends, BACKENDS, "backends") if b != "pytorch"]
        counts = [int(n) for n in args.proposals.split(",") if n.strip()]
        if not backends or not counts or min(counts) < 1:
            raise UsageError("--zeroshot needs onnxruntime or tensorrt in --backends and --proposals counts >= 1")
        missing = [str(b) for b in args.zeroshot if not b.is_dir()]
        if missing:
            raise UsageError(f"--zeroshot: no bundle directory {', '.join(missing)}")
    except ValueError as err:
        print(f"latency.py: error: {err}", file=sys.stderr)
        return 2
    result = zeroshot_latency.run(args.zeroshot, backends, counts, args.warmup, args.iters, args.threads, args.device)
    table = zeroshot_latency.markdown(result)
    print(table)
    common.write_json(args.json, result)
    common.write_text(args.markdown, table, "markdown")
    return 0 if result["rows"] else 1


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    if args.zeroshot:
        return _zeroshot(args)
    started = common.machine()
    try:
        rows, settings, model = prepare(args)
    except UsageError as err:
        print(f"latency.py: error: {err}", file=sys.stderr)
        return 2
    for note in (*settings.deviations, *settings.notes):
        common.progress(f"note: {note}")
    measured, skipped, failed = measure(rows, settings)
    baseline = add_ratios(measured)
    result = {"machine": {**started, "load_average_end": common.load_average()}, "versions": common.versions(),
              "protocol": {**PROTOCOL, "input_size": settings.input_size, "word_len": model["word_len"],
                           "warmup": settings.warmup, "iters": settings.iters, "frame": list(settings.frame_hw),
                           "threads": settings.threads, "device": settings.device,
                           "p50_ms": "per-frame latency of Segmenter.run with the text encoded every iteration "
                                     "(official protocol); cached_text.p50_ms: with the text features cached",
                           "official": not settings.deviations, "deviations": settings.deviations},
              "model": model, "baseline": baseline, "rows": measured, "skipped": skipped, "failed": failed,
              "notes": settings.notes}
    if not measured:
        common.progress("no row could run here (see the reasons above)")
    table = markdown(result)
    print(table)
    common.write_json(args.json, result)
    common.write_text(args.markdown, table, "markdown")
    if args.plot is not None and measured:
        plot(result, args.plot)
        common.progress(f"wrote plot: {args.plot}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
