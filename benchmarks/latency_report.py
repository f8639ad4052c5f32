"""`latency.py`'s results: ratios against the baseline, the markdown tables and the plot. Run on
its own, the tables of a saved run:

    python benchmarks/latency_report.py r50.json [--markdown r50.md] [--plot r50.png]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402  (benchmarks/ is not a package)
from latency_worker import STAGES  # noqa: E402

#: The row every ratio is taken against: PyTorch eager FP32, the official baseline.
BASELINE = ("pytorch", "eager", "fp32")


def add_ratios(rows: list[dict]) -> Optional[dict]:
    """Give every measured row ``ratios`` against the baseline row (None without one):
    ``speedup_p50`` = baseline p50 / row p50 (text per frame), ``speedup_p50_cached`` (text
    cached), ``fps_ratio`` and ``peak_rss_ratio`` = row / baseline."""
    base = next((r for r in rows if (r["backend"], r["variant"], r["precision"]) == BASELINE), None)
    for r in rows:
        r["ratios"] = None if base is None else {
            "speedup_p50": base["p50_ms"] / r["p50_ms"],
            "speedup_p50_cached": base["cached_text"]["p50_ms"] / r["cached_text"]["p50_ms"],
            "fps_ratio": r["fps"] / base["fps"],
            "peak_rss_ratio": (r["memory"]["peak_rss_mib"] / base["memory"]["peak_rss_mib"]
                               if r["memory"]["peak_rss_mib"] and base["memory"]["peak_rss_mib"] else None)}
    return None if base is None else {"backend": BASELINE[0], "variant": BASELINE[1], "precision": BASELINE[2]}


def markdown(result: dict) -> str:
    """The report: protocol and machine lines, the latency table, the stage table, skipped rows."""
    rows, proto, mach = result["rows"], result["protocol"], result["machine"]
    lines = [f"Protocol: batch 1, input {proto['input_size']}x{proto['input_size']}, {proto['word_len']} tokens, "
             f"frame {proto['frame'][0]}x{proto['frame'][1]}, {proto['warmup']} warm-up + {proto['iters']} timed "
             f"iterations per row{_rounds(proto)}, CPU threads: {proto['threads'] or 'physical cores'}. "
             f"**p50/p90/p99/FPS encode the text on every iteration (official protocol)**; "
             f"'cached' = text features cached, as a deployment with a fixed prompt runs.",
             f"Machine: {mach['cpu']}, {mach['logical_cpus']} CPUs, GPU: "
             f"{mach['gpu']['name'] if mach['gpu'] else 'none'}; load average "
             f"{mach['load_average_start']} -> {mach['load_average_end']}.", ""]
    lines.append(common.markdown_table(
        ["backend", "precision", "p50 ms", "p90 ms", "p99 ms", "FPS", "p50 ms cached", "FPS cached",
         "speed-up (p50)", "speed-up cached", "peak RSS MiB", "GPU MiB", "model MB", "max load"],
        [[_name(r), _precision(r), r["p50_ms"], r["p90_ms"], r["p99_ms"], r["fps"], r["cached_text"]["p50_ms"],
          r["cached_text"]["fps"], _ratio(r, "speedup_p50"), _ratio(r, "speedup_p50_cached"),
          r["memory"]["peak_rss_mib"], r["memory"]["device_mib"], _model_mb(r), _max_load(r)] for r in rows]))
    lines += ["", "Mean milliseconds per stage (text encoded every iteration; 'other': validation, tokenization):",
              ""]
    lines.append(common.markdown_table(
        ["backend", "precision", *STAGES, "other", "total"],
        [[_name(r), _precision(r), *(r["stages"][s]["mean_ms"] for s in (*STAGES, "other")), r["mean_ms"]]
         for r in rows]))
    if result["skipped"]:
        lines += ["", "Skipped:"] + [f"- {_name(s)} {_precision(s)}: {s['reason']}" for s in result["skipped"]]
    if result["failed"]:
        lines += ["", "Failed:"] + [f"- {_name(s)} {_precision(s)}: {s['error']}" for s in result["failed"]]
    notes = [*result["protocol"]["deviations"], *result["notes"]]
    if notes:
        lines += ["", "Notes:"] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def _name(row: dict) -> str:
    return row["backend"] + (f" ({row['variant']})" if row.get("variant") else "")


def _precision(row: dict) -> str:
    """``int8 (tensorrt Q/DQ)`` for an INT8 row (its bundle's placement), else the precision."""
    return row["precision"] + (f" ({row['placement']} Q/DQ)" if row.get("placement") else "")


def _max_load(row: dict) -> Optional[float]:
    """The highest 1-minute load average seen around the row's rounds."""
    load = row.get("load_average_max") or row.get("load_average_start")
    return load[0] if load else None


def _rounds(protocol: dict) -> str:
    rounds = protocol.get("rounds") or 1
    return f" in {rounds} alternating rounds" if rounds > 1 else ""


def _ratio(row: dict, key: str) -> Optional[str]:
    return None if row["ratios"] is None else f"{row['ratios'][key]:.2f}x"


def _model_mb(row: dict) -> float:
    """MB (1e6 bytes) of what the row loads: checkpoint, engines (TensorRT) or ONNX files."""
    s = row["sizes"]
    return (s.get("checkpoint_bytes") or (s["engine_bytes"] if row["backend"] == "tensorrt" else s["onnx_bytes"])) / 1e6


def plot(result: dict, path: Path) -> None:
    """PNG of every row's mean stage milliseconds (text per frame), stacked."""
    from plot import stage_bars, write_png

    rows = result["rows"]
    image = stage_bars([f"{_name(r)} {_precision(r)}" for r in rows],
                       [[r["stages"][s]["mean_ms"] for s in (*STAGES, "other")] for r in rows],
                       [*STAGES, "other"],
                       f"CRIS latency per frame, mean ms (input {result['protocol']['input_size']}, batch 1, "
                       f"text encoded every frame) - {result['machine']['cpu']}")
    write_png(path, image)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks/latency_report.py", description=__doc__.split("\n\n")[0])
    p.add_argument("json", type=Path, help="a latency.py --json file")
    p.add_argument("--markdown", type=Path, help="write the markdown tables here (default: stdout only)")
    p.add_argument("--plot", type=Path, help="write the PNG stage chart here")
    args = p.parse_args(argv)
    try:
        result = json.loads(args.json.read_text())
        table = markdown(result)
    except (OSError, ValueError, KeyError) as err:
        print(f"latency_report.py: error: {args.json}: not a readable latency.py result ({err})", file=sys.stderr)
        return 2
    print(table)
    common.write_text(args.markdown, table, "markdown")
    if args.plot is not None and result["rows"]:
        plot(result, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
