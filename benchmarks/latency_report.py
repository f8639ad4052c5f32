"""`latency.py`'s results: ratios against the baseline, the markdown tables and the plot."""

from __future__ import annotations

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
             f"iterations per row, CPU threads: {proto['threads'] or 'physical cores'}. "
             f"**p50/p90/p99/FPS encode the text on every iteration (official protocol)**; "
             f"'cached' = text features cached, as a deployment with a fixed prompt runs.",
             f"Machine: {mach['cpu']}, {mach['logical_cpus']} CPUs, GPU: "
             f"{mach['gpu']['name'] if mach['gpu'] else 'none'}; load average "
             f"{mach['load_average_start']} -> {mach['load_average_end']}.", ""]
    lines.append(common.markdown_table(
        ["backend", "precision", "p50 ms", "p90 ms", "p99 ms", "FPS", "p50 ms cached", "FPS cached",
         "speed-up (p50)", "speed-up cached", "peak RSS MiB", "GPU MiB", "model MB"],
        [[_name(r), r["precision"], r["p50_ms"], r["p90_ms"], r["p99_ms"], r["fps"], r["cached_text"]["p50_ms"],
          r["cached_text"]["fps"], _ratio(r, "speedup_p50"), _ratio(r, "speedup_p50_cached"),
          r["memory"]["peak_rss_mib"], r["memory"]["device_mib"], _model_mb(r)] for r in rows]))
    lines += ["", "Mean milliseconds per stage (text encoded every iteration; 'other': validation, tokenization):",
              ""]
    lines.append(common.markdown_table(
        ["backend", "precision", *STAGES, "other", "total"],
        [[_name(r), r["precision"], *(r["stages"][s]["mean_ms"] for s in (*STAGES, "other")), r["mean_ms"]]
         for r in rows]))
    if result["skipped"]:
        lines += ["", "Skipped:"] + [f"- {_name(s)} {s['precision']}: {s['reason']}" for s in result["skipped"]]
    if result["failed"]:
        lines += ["", "Failed:"] + [f"- {_name(s)} {s['precision']}: {s['error']}" for s in result["failed"]]
    notes = [*result["protocol"]["deviations"], *result["notes"]]
    if notes:
        lines += ["", "Notes:"] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def _name(row: dict) -> str:
    return row["backend"] + (f" ({row['variant']})" if row.get("variant") else "")


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
    image = stage_bars([f"{_name(r)} {r['precision']}" for r in rows],
                       [[r["stages"][s]["mean_ms"] for s in (*STAGES, "other")] for r in rows],
                       [*STAGES, "other"],
                       f"CRIS latency per frame, mean ms (input {result['protocol']['input_size']}, batch 1, "
                       f"text encoded every frame) - {result['machine']['cpu']}")
    write_png(path, image)
