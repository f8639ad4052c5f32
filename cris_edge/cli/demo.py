"""``cris-demo``: referring segmentation on a camera or video stream, live.

    cris-demo                                              # the demo model on a synthetic scene video
    cris-demo --engine bundles/r50_fp16 --source 0 --text "the person on the left"
    cris-demo --source video.mp4 --text "the red car" --text "the bus" --output out.mp4 --no-display
    cris-demo --source "rtsp://camera/stream" --text "the dog"
    cris-demo --serve 8080                                 # a web page on http://127.0.0.1:8080/
    cris-demo --serve 0.0.0.0:8080 --source 0 --text "the cup"   # a headless device, seen on the network

Change the prompts while it runs: type in the window and press Enter (';' between prompts), in
the web page's prompt box (--serve), or, without a window, write lines on standard input. Esc or
Ctrl-C quits. The output video appears
when the run ends (written under a hidden name until then); it may not be the input video.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

from ..extras import missing_extra
from ..runtime.backends import BACKENDS
from .common import UsageError, run_command

DEFAULT_OUTPUT = Path("out") / "cris_demo.mp4"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cris-demo", description="Referring segmentation on a camera or video stream.",
                                epilog=__doc__.split("\n\n", 2)[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", help="camera index (0), video file, rtsp:// or http:// URL, or GStreamer pipeline "
                   "(default: a synthetic scene video, rendered once into the cache)")
    p.add_argument("--text", action="append", metavar="PROMPT", help="what to segment; repeat for several prompts "
                   "(one colour each), or separate them with ';' (default with the synthetic video: its target)")
    p.add_argument("--engine", help="bundle directory, .engine, .onnx or PyTorch checkpoint (default: the shipped "
                   "demo model, exported once to a cached ONNX bundle)")
    p.add_argument("--backend", default="auto", choices=BACKENDS,
                   help="runtime backend: auto (default: the best available), tensorrt, openvino, onnxruntime or "
                   "pytorch")
    p.add_argument("--device", help="cpu, cuda, cuda:N or openvino:NAME (an OpenVINO device, e.g. "
                   "openvino:GPU; default: the backend's choice)")
    p.add_argument("--threshold", type=float, help="mask threshold (default: the model's, 0.35)")
    p.add_argument("--output", type=Path, help=f"write the annotated video here (.mp4); default without a window: "
                   f"{DEFAULT_OUTPUT}")
    p.add_argument("--no-display", action="store_true", help="no window (implied when there is no display); "
                   "prompts are then read from standard input")
    p.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames")
    p.add_argument("--serve", metavar="[HOST:]PORT", help="serve the stream, the prompts, the FPS and timings on a "
                   "web page at http://HOST:PORT/ instead of a window (HOST default 127.0.0.1; 0.0.0.0: every "
                   "interface, visible on the network); a file source loops; needs the [web] extra")
    return p


def _stdin():
    return sys.stdin if sys.stdin is not None and not sys.stdin.closed else None


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_command("cris-demo", _parser(), _main, argv)


def _main(args) -> int:
    # Before numpy loads: its OpenBLAS would spread the post-processing's small matrix products
    # over every core, contending with the runtime's and the demo's threads (on 2 cores: 15-50 ms
    # per frame instead of under 1 ms). No effect when numpy is already loaded.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    logging.basicConfig(level=logging.INFO, format="cris-demo: %(message)s")
    return _run(args, logging.getLogger("cris_edge.demo"))


def _run(args, log: logging.Logger) -> int:
    if args.serve is None:
        return _demo(args, log)
    missing = missing_extra("web", "cris-demo --serve")
    if missing:
        raise UsageError(missing)
    from ..demo.serve import Address, listen

    sock = listen(Address.parse(args.serve))  # before any work: a port in use fails at once
    try:
        return _demo(args, log, sock)
    finally:
        sock.close()


def _demo(args, log: logging.Logger, sock=None) -> int:
    """The demo in a window or without one, or served on the listening socket ``sock``."""
    from ..demo.defaults import demo_bundle, demo_video
    from ..demo.display import no_display_reason
    from ..demo.pipeline import Demo, check_output
    from ..demo.prompts import Prompts, parse_prompts
    from ..demo.sources import SourceSpec, VideoSource
    from ..runtime.result import STAGES, ZEROSHOT_STAGES
    from ..runtime.segmenter import Segmenter

    if args.max_frames is not None and args.max_frames < 1:
        raise UsageError(f"--max-frames must be >= 1, got {args.max_frames}")
    if args.threshold is not None and not 0.0 <= args.threshold < 1.0:
        raise UsageError(f"--threshold must be in [0, 1), got {args.threshold}")
    display = not args.no_display and sock is None
    reason = no_display_reason() if display else None
    if display and reason:
        log.info("%s: running as with --no-display", reason)
        display = False
    output = args.output or (None if display or sock is not None else DEFAULT_OUTPUT)
    texts = [p for line in (args.text or []) for p in parse_prompts(line)]
    if args.source is not None and not texts:
        raise UsageError("--text is required with --source: say what to segment")
    spec = SourceSpec.parse(args.source) if args.source is not None else None
    if output is not None:  # before any work: the model and the video are read while it is written
        check_output(output, [spec.target if spec and spec.kind == "file" else None, args.engine])
    if spec is None:
        video, expression = demo_video()
        spec, texts = SourceSpec.parse(str(video)), texts or [expression]
        log.info("source: synthetic scene video %s", video)
        if output is not None:
            check_output(output, [video])
    try:
        engine = args.engine or demo_bundle()
    except FileNotFoundError as err:  # no shipped demo model in this checkout
        raise FileNotFoundError(f"{str(err).split(';')[0]}: pass --engine (a bundle, .engine, .onnx or checkpoint)") \
            from None
    segmenter = Segmenter(engine, args.backend, args.device, args.threshold)  # logs the backend and why
    if segmenter.method is not None and segmenter.method.proposals is None:
        raise UsageError(f"{engine} is a zero-shot bundle without a proposal generator; the demo needs one: "
                         "export it with cris-export --zeroshot ... --proposals builtin")
    log.info("model: %s", segmenter.model)
    if segmenter.card is not None:
        log.info("model limits: %s", segmenter.card.limits)
    log.info("prompts: %s", " ; ".join(texts))
    demo = Demo(segmenter, VideoSource(spec, loop=sock is not None), Prompts(texts), output, display, _stdin(),
                args.max_frames)
    if sock is None:
        stats = demo.run()
    else:
        from ..demo.serve import model_info, serve

        stats = serve(demo, sock, model_info(segmenter), spec.describe())
    stages = ", ".join(f"{s} {stats.stage_ms.get(s, 0.0):.1f}" for s in (STAGES if segmenter.method is None
                                                                         else ZEROSHOT_STAGES))
    print(f"cris-demo: {stats.frames} frames in {stats.seconds:.2f} s: {stats.fps:.1f} FPS on {segmenter.backend}")
    print(f"cris-demo: mean ms per frame: {stages}" + (f"; {stats.dropped} stale frames dropped" if stats.dropped
                                                        else ""))
    if stats.output is not None:
        print(f"cris-demo: wrote {stats.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
