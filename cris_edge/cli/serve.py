"""``cris-serve``: a bundle as model ``cris`` on Triton Inference Server (HTTP, gRPC, metrics).

    cris-serve --engine bundles/r50_fp16                          # 127.0.0.1:8000 / 8001 / 8002
    cris-serve --engine bundles/r50_fp16 --host 0.0.0.0 --instances 2 --max-batch 8

Clients: cris_edge.serve.Client("grpc://HOST:8001").run(frame, text), cris-predict --server URL,
or any Triton client (the tensors are in docs/serving.md). Ctrl-C or SIGTERM stops the server.
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Optional, Sequence

from .common import UsageError, run_command


def _parser() -> argparse.ArgumentParser:
    from ..serve.repository import DEFAULT_MAX_BATCH, MAX_FRAME_PIXELS

    p = argparse.ArgumentParser(prog="cris-serve", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--engine", required=True, help="bundle directory, .engine or .onnx file to serve")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0: all)")
    p.add_argument("--http-port", type=int, default=8000, help="HTTP port (default 8000)")
    p.add_argument("--grpc-port", type=int, default=8001, help="gRPC port (default 8001)")
    p.add_argument("--metrics-port", type=int, default=8002, help="Prometheus metrics port (default 8002)")
    p.add_argument("--instances", type=int, default=1, help="model instances, one Segmenter each (default 1)")
    p.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH,
                   help=f"most requests Triton batches into one call (default {DEFAULT_MAX_BATCH})")
    p.add_argument("--queue-delay-us", type=int, default=2000,
                   help="microseconds Triton waits for more requests to batch (default 2000)")
    p.add_argument("--max-frame-pixels", type=int, default=MAX_FRAME_PIXELS,
                   help=f"largest frame accepted, height x width (default {MAX_FRAME_PIXELS}, 4K UHD)")
    p.add_argument("--backend", default="auto", choices=("auto", "tensorrt", "onnxruntime"),
                   help="runtime backend (default auto: the best available)")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: the backend's choice)")
    p.add_argument("--threads", type=int, help="CPU threads of each ONNX Runtime instance (default: physical cores)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_command("cris-serve", _parser(), _main, argv)


def _check(args) -> None:
    for option in ("http_port", "grpc_port", "metrics_port"):
        if not 0 < getattr(args, option) < 65536:
            raise UsageError(f"--{option.replace('_', '-')} must be in 1..65535, got {getattr(args, option)}")
    if len({args.http_port, args.grpc_port, args.metrics_port}) < 3:
        raise UsageError("--http-port, --grpc-port and --metrics-port must differ")
    for option in ("instances", "max_batch", "max_frame_pixels"):
        if getattr(args, option) < 1:
            raise UsageError(f"--{option.replace('_', '-')} must be >= 1, got {getattr(args, option)}")
    if args.queue_delay_us < 0:
        raise UsageError(f"--queue-delay-us must be >= 0, got {args.queue_delay_us}")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be >= 1, got {args.threads}")


def _stop(signum, frame) -> None:
    raise KeyboardInterrupt


def _main(args) -> int:
    from ..runtime.selection import locate
    from ..serve.repository import ModelSettings
    from ..serve.server import TritonServer, missing_serving

    _check(args)
    missing = missing_serving()
    if missing:
        raise UsageError(missing)
    locate(args.engine)  # a missing or damaged bundle: one line now, not a Triton log
    settings = ModelSettings(engine=args.engine, max_batch=args.max_batch, queue_delay_us=args.queue_delay_us,
                             instances=args.instances, max_frame_pixels=args.max_frame_pixels,
                             backend=args.backend, device=args.device, threads=args.threads)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _stop)
    server = TritonServer(settings, args.host, args.http_port, args.grpc_port, args.metrics_port)
    try:
        server.start()
        urls = server.endpoints
        print(f"cris-serve: serving model cris ({args.engine}, {args.instances} instance(s), batches up to "
              f"{args.max_batch}) on {urls['http']} and {urls['grpc']}; metrics {urls['metrics']}", flush=True)
        code = server.wait()
    except KeyboardInterrupt:
        server.stop()
        print("cris-serve: stopped", flush=True)
        return 0
    finally:
        server.stop()
    raise RuntimeError(f"Triton Inference Server exited by itself with code {code} (its log is above)")


if __name__ == "__main__":
    sys.exit(main())
