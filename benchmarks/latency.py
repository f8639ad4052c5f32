"""CRIS latency under the official protocol, every backend and precision in one run.

    python benchmarks/latency.py                              # the shipped demo model, all combinations
    python benchmarks/latency.py --backends onnxruntime --precisions fp32,int8 --warmup 10 --iters 50
    python benchmarks/latency.py --engine bundles/r50_fp16 --engine bundles/r50_int8 \\
        --checkpoint exp/best.pth --config cris_r50_refcoco --json r50.json --markdown r50.md --plot r50.png
    python benchmarks/latency.py --config cris_r50_refcoco --backends torch,onnxruntime,openvino \\
        --int8-placements tensorrt,onnxruntime --rounds 4 --json r50.json   # random RN50 weights

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
ratio is against it, from the same run), PyTorch FP16 and CUDA graphs (CUDA only), ONNX Runtime,
OpenVINO (CPU) and TensorRT in FP32 / FP16 / INT8. Without ``--engine`` the bundles are exported
from the checkpoint into the cache (``$CRIS_EDGE_CACHE/bundles``) by the real export pipeline,
once; INT8 is placed for the runtime that runs it (OpenVINO and ONNX Runtime: the CPU placement,
which keeps their accuracy, docs/int8.md), or as ``--int8-placements`` lists (one row per placement). ``--config
NAME`` without ``--checkpoint`` measures that architecture with random weights (speed does not
depend on them; `cris_edge.export.cached.random_checkpoint`). Combinations that cannot run here
are skipped with the reason (printed and recorded). Each row runs in its own process, so its
peak resident memory is its own (an ONNX Runtime, OpenVINO or TensorRT row never imports torch).

On a shared machine, ``--rounds N`` alternates the rows: each row is measured in N rounds of
``iters / N`` timed iterations (each after ``warmup / N`` warm-up ones, in a fresh process),
round-robin over the rows, and its figures are those of all its rounds together; the load
average is recorded around every row's rounds.

Exit status: 0, 1 when a row failed, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402  (benchmarks/ is not a package)
from latency_report import BASELINE, add_ratios, markdown, plot  # noqa: E402
from latency_worker import PROTOCOL, RowSpec, Settings, summarize  # noqa: E402

BACKENDS = {"torch": "pytorch", "pytorch": "pytorch", "onnxruntime": "onnxruntime", "ort": "onnxruntime",
            "openvino": "openvino", "ov": "openvino", "tensorrt": "tensorrt", "trt": "tensorrt"}
#: The bundle runtimes, in table order.
BUNDLE_BACKENDS = ("onnxruntime", "openvino", "tensorrt")
PRECISIONS = ("fp32", "fp16", "int8")
PLACEMENTS = ("tensorrt", "onnxruntime")
#: INT8 Q/DQ placement of the bundles this script exports, per runtime, unless --int8-placements
#: says (see cris_edge.export.int8).
INT8_PLACEMENT = {"onnxruntime": "onnxruntime", "openvino": "onnxruntime", "tensorrt": "tensorrt"}
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
    p.add_argument("--config", help="CRIS config name or file for the checkpoint (default: its own); without "
                   "--checkpoint and --engine: that architecture with random weights (seed 0)")
    p.add_argument("--backends", default="torch,onnxruntime,openvino,tensorrt",
                   help="comma-separated: torch, onnxruntime, openvino, tensorrt (default: all)")
    p.add_argument("--precisions", default="fp32,fp16,int8", help="comma-separated: fp32, fp16, int8 (default: all)")
    p.add_argument("--int8-placements", help="comma-separated INT8 Q/DQ placements, one INT8 row per placement and "
                   "runtime: tensorrt, onnxruntime (default: each runtime's own; TensorRT runs only its own)")
    p.add_argument("--rounds", type=int, default=1, help="measure the rows alternately in this many rounds "
                   "(default 1: one row after the other)")
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
    if not 1 <= args.rounds <= args.iters:
        raise UsageError(f"--rounds must be between 1 and --iters ({args.iters}), got {args.rounds}")


def _read_bundles(paths: Sequence[Path]) -> dict[tuple, tuple[Path, object]]:
    """``--engine`` bundles (path, `Bundle`) by (precision, INT8 placement or None); UsageError for
    a missing or damaged one, or two of one precision (and placement)."""
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
        int8 = config.precision_details.int8
        key = (config.precision, int8.placement if int8 else None)
        if key in found:
            raise UsageError(f"--engine: two {' '.join(k for k in key if k)} bundles ({found[key][0]}, {path})")
        found[key] = (path, config)
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
    if args.config is not None and not bundles:
        if not _has_torch():
            raise UsageError("--config without --checkpoint makes a random-weight model, which needs torch "
                             "(pip install -c constraints.txt -e '.[export]')")
        from cris_edge.export.cached import random_checkpoint
        try:
            return random_checkpoint(args.config), None
        except (ValueError, OSError) as err:
            raise UsageError(f"--config {args.config}: {err}") from None
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
                           "in ONNX Runtime, OpenVINO or TensorRT)"
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


def _bundle_rows(backend: str, precisions, bundles: dict, placements: Optional[list]) -> list[RowSpec]:
    """ONNX Runtime, OpenVINO or TensorRT rows, skipped where the runtime is absent; ``bundles``
    (from --engine, by precision and placement: every INT8 bundle given is a row) or, when empty,
    bundles to export (``bundle`` None; INT8 in each of ``placements``, default the runtime's own)."""
    import importlib.util

    rows = []
    for precision in precisions:
        if precision != "int8":
            keys = [(precision, None)]
        elif bundles:
            keys = sorted(k for k in bundles if k[0] == "int8") or [("int8", None)]
        else:
            own = INT8_PLACEMENT[backend]
            keys = [("int8", p) for p in ([own] if backend == "tensorrt" or not placements else placements)]
        for key in keys:
            row = RowSpec(backend, precision, placement=key[1])
            if backend in ("onnxruntime", "openvino") and importlib.util.find_spec(backend) is None:
                row.skip = f"{backend} is not installed (pip install -c constraints.txt '.[{backend}]')"
            elif backend == "tensorrt" and not bundles:
                from cris_edge.export.tensorrt_build import engine_unavailable_reason
                row.skip = engine_unavailable_reason()
            elif bundles and key not in bundles:
                given = ", ".join(sorted({p for p, _ in bundles}))
                row.skip = f"no {precision} bundle given (--engine; given: {given})"
            elif bundles:
                row.bundle = str(bundles[key][0])
                row.skip = _tensorrt_problem(*bundles[key]) if backend == "tensorrt" else None
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


def plan_rows(backends, precisions, bundles: dict, checkpoint, why_not, config: dict, device,
              placements: Optional[list] = None) -> list[RowSpec]:
    """Every row of the run in table order; the baseline (PyTorch eager FP32) is always first."""
    torch_precisions = list(dict.fromkeys(["fp32", *precisions])) if "pytorch" in backends else ["fp32"]
    rows = [r for r in _torch_rows(torch_precisions, checkpoint, config, why_not, device)
            if r.key == BASELINE or "pytorch" in backends and r.precision in precisions]
    for backend in BUNDLE_BACKENDS:
        if backend in backends:
            rows += _bundle_rows(backend, precisions, bundles, placements)
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
    """Measure ``row`` in a fresh Python process (`latency_worker`); its result dict (raw
    timings), or a failed row whose ``error`` points at the worker's traceback (printed above,
    on stderr)."""
    spec = json.dumps({"row": asdict(row), "settings": asdict(settings)})
    env = {**os.environ, "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS", "1")}
    proc = subprocess.run([sys.executable, str(WORKER), spec], env=env,
                          stdout=subprocess.PIPE, text=True)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return {"status": "failed", "error": f"worker exited with status {proc.returncode} (its error is above)"}
    return json.loads(lines[-1])


def merge_rounds(rounds: list[dict]) -> dict:
    """One row's figures from its rounds' worker results: timings of every round together
    (`latency_worker.summarize`), the highest peak memory, the first round's memory before."""
    import numpy as np

    first = rounds[0]
    raw = {loop: {k: np.concatenate([np.asarray(r["raw"][loop][k]) for r in rounds]) for k in first["raw"][loop]}
           for loop in first["raw"]}
    peaks = [r["memory"]["peak_rss_mib"] for r in rounds if r["memory"]["peak_rss_mib"] is not None]
    devices = [r["memory"]["device_mib"] for r in rounds if r["memory"]["device_mib"] is not None]
    memory = {**first["memory"], "peak_rss_mib": max(peaks) if peaks else None,
              "device_mib": max(devices) if devices else None}
    return {"status": "ok", "runs_on": first["runs_on"], "input_size": first["input_size"],
            "word_len": first["word_len"], **summarize(raw["per_frame"]), "cached_text": summarize(raw["cached"]),
            "rounds": len(rounds), "memory": memory, "sizes": first["sizes"]}


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
    placements = _names(args.int8_placements, PLACEMENTS, "int8-placements") if args.int8_placements else None
    rows = plan_rows(backends, precisions, bundles, checkpoint, why_not, model.to_dict(), args.device, placements)
    if not bundles:
        export_missing(rows, checkpoint, cfg, settings.input_size)
    random = args.checkpoint is None and args.config is not None and not bundles
    return rows, settings, {"config": cfg.extra.get("name"), "native_input_size": cfg.input_size,
                            "word_len": cfg.word_len, "checkpoint": str(checkpoint) if checkpoint else None,
                            "weights": "random (seed 0)" if random else "the checkpoint's"}


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


def measure(rows: list[RowSpec], settings: Settings, rounds: int = 1) -> tuple[list[dict], list[dict], list[dict]]:
    """(measured, skipped, failed rows), printing each skip's reason and each row's progress. With
    ``rounds`` > 1 the runnable rows are measured round-robin, ``iters / rounds`` timed
    iterations (after ``warmup / rounds`` warm-up ones) per row and round."""
    skipped, runnable = [], []
    for row in rows:
        if row.skip:
            common.progress(f"skipping {row.label}: {row.skip}")
            skipped.append({**_head(row), "reason": row.skip})
        else:
            runnable.append(row)
    share = replace(settings, warmup=-(-settings.warmup // rounds), iters=settings.iters // rounds)
    results: dict[int, list[dict]] = {i: [] for i in range(len(runnable))}
    loads: dict[int, list] = {i: [] for i in range(len(runnable))}
    for r in range(rounds):
        last = settings.iters - share.iters * (rounds - 1)  # the last round takes the remainder
        this = share if r < rounds - 1 else replace(share, iters=last)
        for i, row in enumerate(runnable):
            if results[i] and results[i][-1]["status"] != "ok":
                continue  # failed in an earlier round
            round_note = f" (round {r + 1}/{rounds})" if rounds > 1 else ""
            common.progress(f"[{i + 1}/{len(runnable)}] {row.label}{round_note}: {this.warmup} warm-up + "
                            f"{this.iters} timed iterations, twice (text per frame, text cached)")
            loads[i].append(common.load_average())
            results[i].append(run_row(row, this))
            loads[i].append(common.load_average())
    measured, failed = [], []
    for i, row in enumerate(runnable):
        out = {**_head(row), "bundle": row.bundle}
        if results[i][-1]["status"] != "ok":
            out.update(results[i][-1])
            common.progress(f"FAILED {row.label}: {out['error']}")
            failed.append(out)
            continue
        out.update(merge_rounds(results[i]))
        seen = [x for x in loads[i] if x is not None]
        out.update(load_average_start=loads[i][0], load_average_end=loads[i][-1],
                   load_average_max=max(seen, key=lambda x: x[0]) if seen else None)
        out["warnings"] = busy_warnings(out, os.cpu_count())
        out["busy"] = bool(out["warnings"])
        for warning in out["warnings"]:
            common.progress(f"WARNING {row.label}: {warning}")
        measured.append(out)
    return measured, skipped, failed


def _zeroshot(args) -> int:
    """``--zeroshot``: the zero-shot rows of `zeroshot_latency`."""
    import zeroshot_latency

    try:
        _check_counts(args)
        backends = [b for b in _names(args.backends, BACKENDS, "backends") if b in BUNDLE_BACKENDS]
        counts = [int(n) for n in args.proposals.split(",") if n.strip()]
        if not backends or not counts or min(counts) < 1:
            raise UsageError(f"--zeroshot needs one of {', '.join(BUNDLE_BACKENDS)} in --backends and --proposals "
                             "counts >= 1")
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


def _head(row: RowSpec) -> dict:
    return {"backend": row.backend, "variant": row.variant, "precision": row.precision, "placement": row.placement}


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
    measured, skipped, failed = measure(rows, settings, args.rounds)
    baseline = add_ratios(measured)
    result = {"machine": {**started, "load_average_end": common.load_average()}, "versions": common.versions(),
              "protocol": {**PROTOCOL, "input_size": settings.input_size, "word_len": model["word_len"],
                           "warmup": settings.warmup, "iters": settings.iters, "frame": list(settings.frame_hw),
                           "threads": settings.threads, "device": settings.device, "rounds": args.rounds,
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
