"""Load test of ``cris-serve`` on loopback: Triton with model ``cris`` against one in-process
`Segmenter`, in the same run, plus three faults.

    python benchmarks/serve.py                                   # 1, 4, 16 clients x 20 requests
    python benchmarks/serve.py --clients 1,4 --requests 50 --instances 2 --json serve.json

Load: the Segmenter first runs every request of one client alone, in process (``ratio`` is each
row's throughput over its throughput); then for each client count, that many threads, each with
its own gRPC `Client` and its own synthetic scene and prompts, send ``--requests`` requests one
after the other. Per row: requests per second (all clients, wall clock), p50 / p99 latency of a
request seen by its client, the sizes of the batches Triton formed (the ``batch`` output: the
requests in the model call that served each request) and errors (wrong masks count as errors:
every answer is compared with the in-process Segmenter's).

Faults, each followed by a check that the server still answers correctly:
a client process killed (SIGKILL) while its request is in flight; a malformed request (no
prompt) between good ones of another client; the server stopped and started again on the same
ports while two clients keep sending with ``retries`` (every request must still succeed).

Defaults: the shipped demo model's cached FP32 ONNX bundle, frames 240x320, two prompts per
request. Exit status 1 when any load row had an error or a fault check failed.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional, Sequence

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as cris-demo: no OpenBLAS threads contending
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import common  # noqa: E402  (benchmarks/ is not a package)

PROMPTS = ("the {colour} object", "the object on the left")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--engine", type=Path, help="bundle (default: the demo model's cached FP32 ONNX bundle)")
    p.add_argument("--clients", default="1,4,16", help="concurrent client counts (default 1,4,16)")
    p.add_argument("--requests", type=int, default=20, help="requests per client (default 20)")
    p.add_argument("--instances", type=int, default=1, help="model instances of the server (default 1)")
    p.add_argument("--max-batch", type=int, default=8, help="largest batch Triton forms (default 8)")
    p.add_argument("--size", default="240x320", help="frame HxW (default 240x320)")
    p.add_argument("--base-port", type=int, default=18700, help="HTTP port; gRPC and metrics the next two")
    p.add_argument("--json", type=Path, help="write the results here")
    return p


def _scenes(n: int, size: tuple[int, int]) -> list[tuple[np.ndarray, list[str]]]:
    """``n`` (frame, prompts): synthetic scenes (seeds 900+) at ``size`` with their own prompts."""
    import cv2

    from cris_edge.data.synthetic import make_sample

    scenes = []
    for i in range(n):
        sample = make_sample(900 + i)
        scenes.append((cv2.resize(sample.image, size[::-1]), [sample.sentences[0], PROMPTS[1]]))
    return scenes


def _percentile(values: Sequence[float], q: float) -> Optional[float]:
    return float(np.percentile(values, q)) if values else None


def _same(got, want) -> bool:
    return [g.text for g in got] == [w.text for w in want] and all(
        np.array_equal(g.mask, w.mask) for g, w in zip(got, want))


def _load(url: str, clients: int, requests: int, scenes, expected, label=None) -> dict:
    from cris_edge.serve import Client

    latencies, batches, errors = [], [], []

    def work(i: int) -> None:
        frame, texts = scenes[i]
        with Client(url) as client:
            for _ in range(requests):
                start = time.perf_counter()
                try:
                    got = client.run(frame, texts)
                except Exception as err:  # noqa: BLE001 - every failure is counted and reported
                    errors.append(f"client {i}: {err}")
                    continue
                latencies.append(1e3 * (time.perf_counter() - start))
                batches.append(client.last_batch)
                if not _same(got, expected[i]):
                    errors.append(f"client {i}: masks differ from the Segmenter's")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    sizes, counts = np.unique(batches, return_counts=True)
    return {"clients": label or clients, "requests": clients * requests, "seconds": round(seconds, 3),
            "throughput_rps": round(len(latencies) / seconds, 2), "p50_ms": _percentile(latencies, 50),
            "p99_ms": _percentile(latencies, 99), "batch_sizes": {int(s): int(c) for s, c in zip(sizes, counts)},
            "mean_batch": round(float(np.mean(batches)), 2) if batches else None,
            "errors": len(errors), "error_samples": errors[:3]}


def _in_process(segmenter, requests: int, scene) -> dict:
    frame, texts = scene
    latencies = []
    start = time.perf_counter()
    for _ in range(requests):
        t0 = time.perf_counter()
        segmenter.run(frame, texts)
        latencies.append(1e3 * (time.perf_counter() - t0))
    seconds = time.perf_counter() - start
    return {"clients": "in-process Segmenter", "requests": requests, "seconds": round(seconds, 3),
            "throughput_rps": round(requests / seconds, 2), "p50_ms": _percentile(latencies, 50),
            "p99_ms": _percentile(latencies, 99), "batch_sizes": None, "mean_batch": None, "errors": 0}


_KILLED_CLIENT = """
import sys, numpy as np
from cris_edge.serve import Client
client = Client(sys.argv[1])
frame = np.random.default_rng(0).integers(0, 256, (1080, 1920, 3), np.uint8)
print("sending", flush=True)
while True:
    client.run(frame, ["the object on the left"] * 8)
"""


def _check(url: str, scene, want) -> bool:
    from cris_edge.serve import Client

    with Client(url) as client:
        return _same(client.run(*scene), want)


def _fault_killed_client(url: str, scene, want) -> dict:
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_CLIENT, url], stdout=subprocess.PIPE, text=True)
    proc.stdout.readline()
    time.sleep(1.0)  # a 1080p frame with 8 prompts takes longer than this on a CPU: the request is in flight
    proc.kill()
    proc.wait()
    return {"fault": "client killed (SIGKILL) mid-request", "server_still_correct": _check(url, scene, want)}


def _fault_malformed(url: str, port: int, scene, want) -> dict:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    from cris_edge.serve import Client

    raw = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
    frame = grpcclient.InferInput("frame", [1, *scene[0].shape], "UINT8")
    frame.set_data_from_numpy(scene[0][None])
    text = grpcclient.InferInput("text", [1, 64], "UINT8")
    text.set_data_from_numpy(np.zeros((1, 64), np.uint8))
    good, refused = 0, None
    with Client(url) as client:
        for i in range(5):
            if i == 2:
                try:
                    raw.infer("cris", [frame, text])
                    refused = "accepted"
                except InferenceServerException as err:
                    refused = err.message()
            good += _same(client.run(*scene), want)
    raw.close()
    return {"fault": "malformed request (no prompt) between good ones (2 before, 3 after)", "good_answered": good,
            "refusal": refused, "server_still_correct": good == 5 and refused != "accepted"}


def _fault_restart(server, url: str, scenes, expected) -> dict:
    from cris_edge.serve import Client

    stop = threading.Event()
    done, errors, worst = [], [], []

    def work(i: int) -> None:
        with Client(url, retries=40, retry_wait=0.25) as client:
            while not stop.is_set():
                start = time.perf_counter()
                try:
                    ok = _same(client.run(*scenes[i]), expected[i])
                except Exception as err:  # noqa: BLE001 - counted
                    errors.append(str(err))
                    continue
                worst.append(time.perf_counter() - start)
                (done if ok else errors).append(i)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    time.sleep(2.0)
    before = len(done)
    t0 = time.perf_counter()
    server.stop()
    server.start()
    restart_s = time.perf_counter() - t0
    time.sleep(3.0)
    stop.set()
    for t in threads:
        t.join()
    return {"fault": "server stopped and started again, 2 clients retrying", "restart_s": round(restart_s, 1),
            "answered_before": before, "answered_after": len(done) - before, "errors": len(errors),
            "error_samples": errors[:3], "longest_request_s": round(max(worst), 1) if worst else None,
            "server_still_correct": not errors and len(done) > before}


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    counts = [int(c) for c in args.clients.split(",")]
    size = tuple(int(v) for v in args.size.lower().split("x"))
    from cris_edge import Segmenter
    from cris_edge.serve.repository import ModelSettings
    from cris_edge.serve.server import TritonServer

    if args.engine is None:
        from cris_edge.demo.defaults import demo_bundle

        args.engine = demo_bundle()
    result = {"machine": common.machine(), "versions": common.versions(), "engine": str(args.engine),
              "frame": list(size), "prompts_per_request": 2, "requests_per_client": args.requests,
              "instances": args.instances, "max_batch": args.max_batch}
    scenes = _scenes(max(counts), size)
    settings = ModelSettings(engine=args.engine, max_batch=args.max_batch, instances=args.instances)
    ports = (args.base_port, args.base_port + 1, args.base_port + 2)
    with Segmenter(args.engine, "onnxruntime") as segmenter:
        expected = [segmenter.run(frame, texts) for frame, texts in scenes]
        large = _scenes(2, (2 * size[0], 2 * size[1]))
        expected_large = [segmenter.run(frame, texts) for frame, texts in large]
        common.progress("in-process Segmenter")
        rows = [_in_process(segmenter, args.requests, scenes[0])]
    server = TritonServer(settings, "127.0.0.1", *ports, log_file=sys.stderr)  # stdout carries the results
    url = f"grpc://127.0.0.1:{ports[1]}"
    with server:
        for c in counts:
            common.progress(f"{c} client(s)")
            rows.append(_load(url, c, args.requests, scenes, expected))
        common.progress("4 clients, 2 frame sizes")
        rows.append(_load(url, 4, args.requests, scenes[:2] + large, expected[:2] + expected_large,
                          f"4 ({size[0]}x{size[1]} and {2 * size[0]}x{2 * size[1]})"))
        common.progress("faults")
        faults = [_fault_killed_client(url, scenes[0], expected[0]),
                  _fault_malformed(url, ports[1], scenes[0], expected[0]),
                  _fault_restart(server, url, scenes, expected)]
    base = rows[0]["throughput_rps"]
    for row in rows:
        row["ratio"] = round(row["throughput_rps"] / base, 2)
    result.update(rows=rows, faults=faults, load_average_end=common.load_average())
    print(common.markdown_table(
        ["clients", "requests", "req/s", "ratio", "p50 ms", "p99 ms", "batch sizes (count)", "errors"],
        [[r["clients"], r["requests"], r["throughput_rps"], r["ratio"], r["p50_ms"], r["p99_ms"],
          ", ".join(f"{k}: {v}" for k, v in r["batch_sizes"].items()) if r["batch_sizes"] else "–", r["errors"]]
         for r in rows]))
    for fault in faults:
        print(f"- {fault['fault']}: " + ", ".join(f"{k} {v}" for k, v in fault.items() if k != "fault"))
    common.write_json(args.json, result)
    bad = any(r["errors"] for r in rows) or not all(f["server_still_correct"] for f in faults)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
