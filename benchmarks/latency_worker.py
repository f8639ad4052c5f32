"""One row of `latency.py`, measured in its own process (so its peak resident memory is its
own, and an ONNX Runtime or TensorRT row never imports torch):

    python benchmarks/latency_worker.py '{"row": {...RowSpec...}, "settings": {...Settings...}}'

prints the row's raw timings (every iteration's milliseconds per stage, which `latency.py`
summarises with `summarize`, over one or several rounds), memory and sizes as one JSON line on
stdout (progress goes to stderr). Times are milliseconds, memory MiB, sizes bytes.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402  (benchmarks/ is not a package)
from cris_edge.runtime.result import STAGES  # noqa: E402

#: The model input side, text tokens, iterations and batch of the official CRIS protocol.
PROTOCOL = {"input_size": 416, "word_len": 17, "warmup": 100, "iters": 400, "batch": 1}
#: Size (H, W) and seed of the synthetic frame every iteration segments.
FRAME_HW, FRAME_SEED = (480, 640), 0


@dataclass
class RowSpec:
    """One row to measure: ``backend`` (pytorch, onnxruntime, openvino, tensorrt), ``variant``
    (PyTorch: eager or cuda-graph), ``precision`` (``placement``: of an INT8 bundle's Q/DQ), and
    what it runs: ``bundle`` or ``checkpoint`` + ``model_config`` (a CRIS config dict at the
    protocol's input size)."""

    backend: str
    precision: str
    variant: Optional[str] = None
    bundle: Optional[str] = None
    checkpoint: Optional[str] = None
    model_config: Optional[dict] = None
    skip: Optional[str] = None
    placement: Optional[str] = None

    @property
    def label(self) -> str:
        placed = f"({self.placement} placement)" if self.placement else None
        return " ".join(p for p in (self.backend, self.variant, self.precision, placed) if p)

    @property
    def key(self) -> tuple:
        return (self.backend, self.variant, self.precision)


@dataclass
class Settings:
    """The run's protocol: model input side, frame size (H, W), iterations, device, threads."""

    input_size: int
    warmup: int
    iters: int
    frame_hw: tuple = FRAME_HW
    device: Optional[str] = None
    threads: Optional[int] = None
    deviations: list = field(default_factory=list)
    notes: list = field(default_factory=list)



def worker(spec: dict) -> dict:
    """In the worker process: open the row's Segmenter, run the protocol, return its figures."""
    row, settings = RowSpec(**spec["row"]), Settings(**spec["settings"])
    rss_before, device_before = common.rss_mib(), common.device_used_mib()
    segmenter = open_segmenter(row, settings)
    frame, text = protocol_input(tuple(settings.frame_hw))
    common.progress(f"{row.label}: {segmenter.backend}")
    per_frame = time_loop(segmenter, frame, text, settings.warmup, settings.iters, f"{row.label} (text per frame)",
                          cache=False)
    cached = time_loop(segmenter, frame, text, max(1, settings.warmup // 10), settings.iters,
                       f"{row.label} (text cached)", cache=True)
    raw = {loop: {k: v.tolist() for k, v in ms.items()} for loop, ms in (("per_frame", per_frame), ("cached", cached))}
    out = {"status": "ok", "runs_on": segmenter.backend, "input_size": segmenter.input_size,
           "word_len": segmenter.word_len, "raw": raw, "memory": memory(row, rss_before, device_before),
           "sizes": sizes(row)}
    segmenter.close()
    return out


def open_segmenter(row: RowSpec, settings: Settings):
    """The row's `Segmenter`: PyTorch variants through `Segmenter.from_backend`, bundles by path."""
    from cris_edge.runtime.segmenter import Segmenter

    if row.backend == "pytorch":
        import torch
        from torch_variants import TorchVariantBackend

        if settings.threads:  # torch's threads are process-wide: this worker process runs one row
            torch.set_num_threads(settings.threads)
        backend = TorchVariantBackend(row.checkpoint, row.model_config, settings.device, row.precision,
                                      row.variant == "cuda-graph")
        return Segmenter.from_backend(backend, "benchmark row")
    return Segmenter(row.bundle, row.backend, settings.device, threads=settings.threads)


def protocol_input(frame_hw: tuple[int, int]):
    """(uint8 BGR frame ``[H, W, 3]``, its referring expression): a synthetic scene."""
    from cris_edge.data.synthetic import SyntheticConfig, make_sample

    sample = make_sample(FRAME_SEED, SyntheticConfig(height=frame_hw[0], width=frame_hw[1]))
    return sample.image, sample.sentences[0]


def time_loop(segmenter, frame, text: str, warmup: int, iters: int, what: str, cache: bool) -> dict:
    """``warmup`` untimed then ``iters`` timed ``segmenter.run(frame, text)`` calls with the text
    cache on or off. Returns float64 arrays of ``iters`` ms: ``wall`` (the whole call), each of
    `STAGES`, and ``other`` (wall minus the stages: validation, tokenization, locking)."""
    import numpy as np

    from cris_edge.runtime.text_cache import TextCache

    segmenter.text_cache = TextCache(256 if cache else 0)
    start = time.perf_counter()
    for _ in range(warmup):
        segmenter.run(frame, text)
    if warmup:
        common.progress(f"  {what}: {warmup} warm-up iterations in {time.perf_counter() - start:.1f} s")
    wall, stages = np.empty(iters), {s: np.empty(iters) for s in STAGES}
    step = max(1, iters // 5)
    for i in range(iters):
        start = time.perf_counter()
        result = segmenter.run(frame, text)
        wall[i] = 1e3 * (time.perf_counter() - start)
        for stage in STAGES:
            stages[stage][i] = result.timings.get(stage, 0.0)
        if (i + 1) % step == 0 or i + 1 == iters:
            common.progress(f"  {what}: {i + 1}/{iters} timed, median {np.median(wall[:i + 1]):.2f} ms")
    other = wall - sum(stages.values())
    return {"wall": wall, **stages, "other": other}


def summarize(ms: dict) -> dict:
    """Latency percentiles (ms), FPS (1000 / mean ms: one frame at a time) and per-stage mean
    and median ms of a `time_loop` result."""
    import numpy as np

    wall = ms["wall"]
    p50, p90, p99 = (float(v) for v in np.percentile(wall, [50, 90, 99]))
    mean = float(wall.mean())
    stages = {s: {"mean_ms": float(ms[s].mean()), "p50_ms": float(np.median(ms[s]))} for s in (*STAGES, "other")}
    return {"p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "mean_ms": mean, "std_ms": float(wall.std()),
            "min_ms": float(wall.min()), "max_ms": float(wall.max()), "fps": 1000.0 / mean, "iters": len(wall),
            "stages": stages}


def memory(row: RowSpec, rss_before: Optional[float], device_before: Optional[float]) -> dict:
    """Host memory (MiB): RSS before the model was opened and the worker's peak; device memory
    (MiB, CUDA only): PyTorch's peak allocation, else the growth of the GPU's used memory."""
    out = {"rss_before_mib": rss_before, "peak_rss_mib": common.peak_rss_mib(), "device_mib": None,
           "device_measure": None}
    if row.backend == "pytorch":
        import torch
        if torch.cuda.is_available() and row.precision != "int8":
            out["device_mib"] = round(torch.cuda.max_memory_allocated() / common.MIB, 1)
            out["device_measure"] = "torch.cuda.max_memory_allocated"
        return out
    after = common.device_used_mib()
    if after is not None and device_before is not None:
        out["device_mib"] = round(after - device_before, 1)
        out["device_measure"] = "cudaMemGetInfo growth over the row (all allocations of the process)"
    return out


def sizes(row: RowSpec) -> dict:
    """Bytes of what the row runs: the checkpoint, or the bundle's ONNX files / engines."""
    if row.backend == "pytorch":
        return {"checkpoint_bytes": Path(row.checkpoint).stat().st_size}
    from cris_edge import bundle as bundle_format

    return common.bundle_sizes(Path(row.bundle), bundle_format.read(row.bundle))


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: latency_worker.py SPEC_JSON (run by latency.py)", file=sys.stderr)
        return 2
    print(json.dumps(worker(json.loads(argv[0]))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
