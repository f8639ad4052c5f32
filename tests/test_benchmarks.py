"""``benchmarks/latency.py`` and ``benchmarks/stream.py`` on CPU with tiny settings, through
their real code paths (subprocesses, the shipped demo model exported once into a temporary
cache by the real export pipeline): the JSON schema, consistent numbers (percentiles in order,
FPS = 1000 / mean, stages summing to the total, ratios against the baseline), skipped rows with
reasons, bad arguments, and the soak's memory-growth check. About 40 s on 2 CPU cores. Timings
are checked for structure only (present, ordered, summing as defined), never against each other:
that would measure the machine."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
STAGES = ("preprocess", "text", "visual", "head", "postprocess")
ROW_KEYS = {"backend", "variant", "precision", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms", "max_ms", "fps",
            "iters", "stages", "cached_text", "memory", "sizes", "ratios", "runs_on", "input_size", "word_len"}


def _run(script: str, args: list[str], cache: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "CRIS_EDGE_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(BENCHMARKS / script), *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cris_cache")


@pytest.fixture(scope="module")
def latency(cache, tmp_path_factory):
    """One latency run with no --engine (so the demo model is exported into ``cache`` by the
    real pipeline, at its native 384: the demo's own bundle, which the stream tests reuse):
    PyTorch, ONNX Runtime and TensorRT in FP32. Returns (process, JSON, output directory)."""
    out = tmp_path_factory.mktemp("latency")
    proc = _run("latency.py", ["--backends", "torch,onnxruntime,tensorrt", "--precisions", "fp32",
                               "--input-size", "384", "--warmup", "2", "--iters", "5", "--threads", "1",
                               "--json", str(out / "l.json"), "--markdown", str(out / "l.md"),
                               "--plot", str(out / "l.png")], cache)
    assert proc.returncode == 0, proc.stderr
    return proc, json.loads((out / "l.json").read_text()), out


@pytest.fixture(scope="module")
def demo_bundle(cache, latency) -> Path:
    """The shipped demo model's bundle, which the latency run (no --engine) exported into ``cache``:
    the one stream.py uses by default."""
    (bundle,) = (cache / "bundles").iterdir()
    return bundle


@pytest.mark.slow
def test_latency_rows_schema_and_consistency(latency):
    _, result, _ = latency
    assert {"machine", "versions", "protocol", "model", "baseline", "rows", "skipped", "failed"} <= set(result)
    assert result["failed"] == []
    assert [(r["backend"], r["variant"]) for r in result["rows"]][:2] == [("pytorch", "eager"), ("onnxruntime", None)]
    for row in result["rows"]:
        assert ROW_KEYS <= set(row), ROW_KEYS - set(row)
        assert row["precision"] == "fp32" and row["iters"] == 5 and row["input_size"] == 384
        for timing in (row, row["cached_text"]):
            assert 0 < timing["min_ms"] <= timing["p50_ms"] <= timing["p90_ms"] <= timing["p99_ms"] <= timing["max_ms"]
            assert timing["fps"] == pytest.approx(1000.0 / timing["mean_ms"], rel=1e-9)
            stages = timing["stages"]
            assert all(stages[s]["mean_ms"] >= 0 for s in STAGES) and stages["visual"]["mean_ms"] > 0
            assert stages["head"]["mean_ms"] > 0 and stages["other"]["mean_ms"] >= 0
            assert sum(stages[s]["mean_ms"] for s in (*STAGES, "other")) == pytest.approx(timing["mean_ms"], rel=1e-6)
        memory = row["memory"]
        assert 0 < memory["rss_before_mib"] <= memory["peak_rss_mib"]
        assert max(row["sizes"].values()) > 0
        # the load average around each row, and whether its numbers look like a busy machine's
        for when in ("start", "end"):
            load = row[f"load_average_{when}"]
            assert load is None or (len(load) == 3 and all(x >= 0 for x in load))
        assert isinstance(row["warnings"], list) and row["busy"] == bool(row["warnings"])
        spread = row["p90_ms"] / row["p50_ms"] > 1.5
        assert spread == any(w.startswith("p90/p50") for w in row["warnings"]), row["warnings"]
    process, _, _ = latency
    for row in result["rows"]:
        for warning in row["warnings"]:
            assert f": {warning}" in process.stderr


@pytest.mark.slow
def test_latency_ratios_against_the_baseline(latency):
    _, result, _ = latency
    assert result["baseline"] == {"backend": "pytorch", "variant": "eager", "precision": "fp32"}
    base = result["rows"][0]
    assert base["ratios"]["speedup_p50"] == 1.0 and base["ratios"]["fps_ratio"] == 1.0
    for row in result["rows"][1:]:
        assert row["ratios"]["speedup_p50"] == pytest.approx(base["p50_ms"] / row["p50_ms"])
        assert row["ratios"]["speedup_p50_cached"] == pytest.approx(base["cached_text"]["p50_ms"]
                                                                    / row["cached_text"]["p50_ms"])
        assert row["ratios"]["fps_ratio"] == pytest.approx(row["fps"] / base["fps"])


@pytest.mark.slow
def test_latency_skips_with_reasons_and_records_the_protocol(latency):
    proc, result, _ = latency
    assert "exporting cris_tiny_synthetic.pth (fp32, input 384)" in proc.stderr
    done = [(r["backend"], r["variant"], r["precision"]) for r in result["rows"] + result["skipped"]]
    assert len(done) == len(set(done)) == 4
    assert ("tensorrt", None, "fp32") in done and ("pytorch", "cuda-graph", "fp32") in done
    assert all(s["reason"].strip() for s in result["skipped"])
    protocol = result["protocol"]
    assert protocol["input_size"] == 384 and protocol["word_len"] == 17 and protocol["batch"] == 1
    assert (protocol["warmup"], protocol["iters"]) == (2, 5) and protocol["official"] is False
    assert any("416" in d for d in protocol["deviations"]) and "text encoded every iteration" in protocol["p50_ms"]


@pytest.mark.slow
def test_latency_given_bundles(cache, demo_bundle, tmp_path):
    """--engine: precisions without a given bundle are skipped; the baseline still runs (the
    bundle was exported from the shipped demo model, so its checkpoint is known)."""
    proc = _run("latency.py", ["--engine", str(demo_bundle), "--backends", "onnxruntime", "--precisions", "fp16,int8",
                               "--warmup", "0", "--iters", "2", "--json", str(tmp_path / "l.json")], cache)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "l.json").read_text())
    assert [(r["backend"], r["precision"]) for r in result["rows"]] == [("pytorch", "fp32")]
    reasons = {s["precision"]: s["reason"] for s in result["skipped"]}
    assert reasons == {"fp16": "no fp16 bundle given (--engine; given: fp32)",
                       "int8": "no int8 bundle given (--engine; given: fp32)"}
    assert "skipping onnxruntime fp16: no fp16 bundle given" in proc.stderr


@pytest.mark.slow
def test_latency_markdown_and_plot(latency):
    proc, result, out = latency
    table = (out / "l.md").read_text()
    assert table in proc.stdout
    assert "| backend | precision | p50 ms |" in table and "Skipped:" in table
    assert table.count("| pytorch (eager) | fp32 |") == 2  # the latency table and the stage table
    image = cv2.imread(str(out / "l.png"))
    assert image is not None and image.shape[0] > 100 and image.shape[1] > 500
    report = subprocess.run([sys.executable, str(BENCHMARKS / "latency_report.py"), str(out / "l.json")],
                            capture_output=True, text=True, timeout=120)  # the tables again, from the JSON alone
    assert report.returncode == 0 and report.stdout == table + "\n", report.stderr


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino is not installed")
def test_latency_random_weights_openvino_placements_in_alternating_rounds(tmp_path):
    """--config without --checkpoint: random cris_tiny weights, exported into the cache; OpenVINO
    INT8 rows for both Q/DQ placements, measured in two alternating rounds."""
    cache = tmp_path / "cache"
    proc = _run("latency.py", ["--config", "cris_tiny", "--backends", "openvino", "--precisions", "int8",
                               "--int8-placements", "tensorrt,onnxruntime", "--input-size", "384", "--warmup", "1",
                               "--iters", "3", "--rounds", "2", "--json", str(tmp_path / "l.json")], cache,
                timeout=1800)  # two INT8 exports with calibration
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "l.json").read_text())
    (random,) = (cache / "random").iterdir()
    assert random.name.startswith("cris_tiny-") and result["model"]["checkpoint"] == str(random)
    assert result["model"]["weights"] == "random (seed 0)" and result["protocol"]["rounds"] == 2
    rows = result["rows"]
    assert [(r["backend"], r["precision"], r["placement"]) for r in rows] == [
        ("pytorch", "fp32", None), ("openvino", "int8", "tensorrt"), ("openvino", "int8", "onnxruntime")]
    for row in rows:
        assert row["rounds"] == 2 and row["iters"] == 3 and row["cached_text"]["iters"] == 3  # 1 + 2, merged
        assert sum(row["stages"][s]["mean_ms"] for s in (*STAGES, "other")) == pytest.approx(row["mean_ms"])
        assert len(row["load_average_max"] or [0, 0, 0]) == 3
    assert all(r["runs_on"].startswith("openvino (CPU, ") and r["runs_on"].endswith(", f32 inference)")
               for r in rows[1:])
    assert proc.stderr.count("(round 2/2)") == 3 and "in 2 alternating rounds" in proc.stdout
    for placement in ("tensorrt", "onnxruntime"):
        assert f"| openvino | int8 ({placement} Q/DQ) |" in proc.stdout


@pytest.mark.slow
def test_gpu_check_refuses_without_a_gpu_and_lists_its_steps(tmp_path):
    script = str(BENCHMARKS / "gpu_check.sh")
    assert subprocess.run(["bash", "-n", script]).returncode == 0
    dry = subprocess.run([script, "--dry-run", str(tmp_path / "out")], capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0 and not (tmp_path / "out").exists()
    for step in ("tests", "kernels", "latency_demo", "latency_r50"):
        assert f"[{step}, at most" in dry.stdout
    assert "tests/test_kernels_gpu.py" in dry.stdout and "--config cris_r50_refcoco" in dry.stdout
    import torch
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is here: the refusal cannot be checked (run the script itself)")
    run = subprocess.run([script, str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "no CUDA GPU visible to PyTorch" in run.stderr and "nothing was run" in run.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["--backends", "torch,tpu"], "unknown backend 'tpu'"),
    (["--precisions", "fp8"], "unknown precision 'fp8'"),
    (["--engine", "/nonexistent/bundle"], "--engine /nonexistent/bundle: no such bundle directory"),
    (["--iters", "0"], "--iters >= 1"),
    (["--input-size", "300"], "multiple of 32"),
    (["--rounds", "0"], "--rounds must be between 1 and --iters"),
    (["--int8-placements", "cpu"], "unknown int8-placement 'cpu'"),
])
def test_latency_bad_arguments(tmp_path, args, message):
    proc = _run("latency.py", args, tmp_path)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr


@pytest.mark.slow
def test_stream_fps_runs(cache, demo_bundle, tmp_path):
    proc = _run("stream.py", ["--prompts", "1,2", "--frames", "6", "--json", str(tmp_path / "s.json"),
                              "--markdown", str(tmp_path / "s.md")], cache)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "s.json").read_text())
    assert result["engine"] == str(demo_bundle)  # the demo's cached bundle by default
    assert [(r["prompts"], r["text_cache"]) for r in result["runs"]] == [(1, True), (1, False), (2, True), (2, False)]
    for run in result["runs"]:
        assert run["frames"] == 6 and len(run["texts"]) == len(set(run["texts"])) == run["prompts"]
        assert run["fps"] > 0 and run["ms_per_frame"] == pytest.approx(1000.0 / run["fps"])
        assert set(STAGES) <= set(run["stage_ms"]) and run["rss_mib"] > 0
    assert result["soak"] is None and "| 2 | off | 6 |" in (tmp_path / "s.md").read_text()


@pytest.mark.slow
def test_stream_soak_reports_memory(cache, demo_bundle, tmp_path):
    proc = _run("stream.py", ["--soak", "--frames", "30", "--json", str(tmp_path / "soak.json")], cache)
    result = json.loads((tmp_path / "soak.json").read_text())
    soak = result["soak"]
    # the pipeline does not leak: memory stays within --max-growth (5 %), so the soak passes
    assert proc.returncode == 0 and soak["problems"] == [], (soak, proc.stderr)
    assert "MEMORY GROWTH" not in proc.stderr and "no growth above 5.0%" in proc.stdout
    assert result["engine"] == str(demo_bundle) and result["runs"] == [] and soak["frames"] == 30
    samples = soak["samples"]
    assert [samples[k]["frame"] for k in ("start", "middle", "end")] == [3, 15, 30]
    assert all(s["rss_mib"] > 0 for s in samples.values())
    assert soak["rss_growth_pct"] == pytest.approx(
        100 * (samples["end"]["rss_mib"] - samples["start"]["rss_mib"]) / samples["start"]["rss_mib"])


def test_soak_growth_check():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import stream
    finally:
        sys.path.remove(str(BENCHMARKS))
    samples = {"start": {"frame": 10, "rss_mib": 100.0, "device_mib": None},
               "middle": {"frame": 50, "rss_mib": 103.0, "device_mib": None},
               "end": {"frame": 100, "rss_mib": 106.0, "device_mib": None}}
    assert stream.growth(samples, "rss_mib") == pytest.approx(6.0)
    problems = stream.check_growth(samples, 5.0)
    assert len(problems) == 1 and "resident memory grew 6.0%" in problems[0]
    assert stream.check_growth(samples, 10.0) == []
    samples["end"]["rss_mib"] = 104.0
    assert stream.check_growth(samples, 5.0) == []
    assert stream.soak_marks(10_000) == {100: "start", 5000: "middle", 10_000: "end"}


def test_busy_rows_are_flagged(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import latency as latency_script

    quiet = {"p50_ms": 10.0, "p90_ms": 12.0, "cached_text": {"p50_ms": 5.0, "p90_ms": 5.5},
             "load_average_start": [0.5, 0.4, 0.3], "load_average_end": [1.0, 0.5, 0.3]}
    assert latency_script.busy_warnings(quiet, 2) == []
    assert latency_script.busy_warnings({**quiet, "load_average_start": None, "load_average_end": None}, None) == []
    spread = latency_script.busy_warnings({**quiet, "p90_ms": 16.0}, 2)
    assert len(spread) == 1 and spread[0].startswith("p90/p50 = 1.60 > 1.5")
    cached = latency_script.busy_warnings({**quiet, "cached_text": {"p50_ms": 5.0, "p90_ms": 9.0}}, 2)
    assert len(cached) == 1 and cached[0].startswith("cached_text p90/p50 = 1.80")
    loaded = latency_script.busy_warnings({**quiet, "load_average_end": [3.5, 2.0, 1.0]}, 2)
    assert len(loaded) == 1 and "load average 3.50 > 2 cores at the row's end" in loaded[0]


@pytest.fixture(scope="module")
def zeroshot_bundle(tmp_path_factory) -> Path:
    """The shipped tiny CLIP exported to an FP32 zero-shot bundle with the built-in generator."""
    from cris_edge.assets import zeroshot_clip
    from cris_edge.export.zeroshot_pipeline import ZeroShotExportOptions, export_zeroshot

    path = tmp_path_factory.mktemp("zeroshot") / "synthetic_zs"
    export_zeroshot(ZeroShotExportOptions(zeroshot_clip(), path, "fp32", noun_phrase="rules", proposals="builtin",
                                          build_engines=False, progress=False))
    return path


@pytest.mark.slow
def test_zeroshot_latency_rows_per_alpha_and_proposal_count(zeroshot_bundle, cache, tmp_path):
    proc = _run("latency.py", ["--zeroshot", str(zeroshot_bundle), "--backends", "onnxruntime", "--proposals", "2,5",
                               "--warmup", "1", "--iters", "2", "--threads", "1", "--json", str(tmp_path / "z.json"),
                               "--markdown", str(tmp_path / "z.md")], cache)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "z.json").read_text())
    rows = result["rows"]
    assert [(r["alpha"], r["proposals"]) for r in rows] == [(0.95, 2), (0.95, 5), (1.0, 2), (1.0, 5)]
    for row in rows:
        stages = row["stages_ms"]
        assert row["backend"].startswith("onnxruntime") and row["min_ms"] <= row["p50_ms"]
        assert all(stages[s] >= 0 for s in ("preprocess", "global", "score", "total"))
        if row["alpha"] == 1.0:
            assert not stages.get("local") and row["local_share"] in (None, 0.0)  # the local graph never ran
        else:
            assert stages["local"] > 0 and 0 < row["local_share"] < 1
    assert (tmp_path / "z.md").read_text().count("\n| resnet |") == 4


@pytest.mark.slow
def test_zeroshot_tradeoff_rows_and_the_largest_proposals(zeroshot_bundle, cache, tmp_path):
    proc = _run("zeroshot_tradeoff.py", ["--engine", str(zeroshot_bundle), "--samples", "12", "--keep", "1,all",
                                         "--threads", "1", "--json", str(tmp_path / "t.json")], cache)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads((tmp_path / "t.json").read_text())["rows"]
    assert [(r["keep"], r["alpha"]) for r in rows] == [(1, 0.95), (1, 1.0), (None, 0.95), (None, 1.0)]
    assert all(r["pairs"] > 12 and 0 <= r["mIoU"] <= 1 for r in rows)
    assert rows[0]["mean_proposals"] == 1 and rows[2]["mean_proposals"] > 1
    from cris_edge.data.synthetic import HELD_OUT_SEED_OFFSET, make_sample
    from cris_edge.eval.metrics import SegmentationScores
    from cris_edge.eval.zeroshot import synthetic_instance_masks

    only_largest = SegmentationScores()  # one proposal left: every sentence gets the scene's largest object
    for seed in range(HELD_OUT_SEED_OFFSET, HELD_OUT_SEED_OFFSET + 12):
        scene = make_sample(seed)
        masks = synthetic_instance_masks(scene)
        biggest = masks[masks.reshape(len(masks), -1).sum(axis=1).argmax()].astype(np.uint8)
        for _ in scene.sentences:
            only_largest.add(biggest, scene.mask)
    assert rows[0]["mIoU"] == rows[1]["mIoU"] == pytest.approx(only_largest.summary()["mIoU"], abs=1e-9)
    bad = _run("zeroshot_tradeoff.py", ["--engine", str(zeroshot_bundle), "--keep", "0"], cache)
    assert bad.returncode == 2 and "--keep takes counts >= 1" in bad.stderr


def test_largest_keeps_the_biggest_masks_in_their_order():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from zeroshot_tradeoff import largest
    finally:
        sys.path.remove(str(BENCHMARKS))
    masks = np.zeros((4, 10, 10), bool)
    for k, area in enumerate((3, 40, 10, 25)):
        masks[k].flat[:area] = True
    assert np.array_equal(largest(masks, 2), masks[[1, 3]])
    assert largest(masks, None) is masks and largest(masks, 9) is masks
