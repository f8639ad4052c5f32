"""``cris-predict``: referring segmentation on image files, written to a directory.

    cris-predict --source photo.jpg --text "the red car"          # the demo model
    cris-predict --engine bundles/r50_fp16 --source photos/ --text "the dog" --text "the ball"
    cris-predict --source "data/**/*.png" --text "the blue square" --output out/squares
    cris-predict --server grpc://gpu-server:8001 --source photos/ --text "the dog"   # a cris-serve server

Per image and prompt: masks/NAME.png (0/255 at the image's size), overlays/NAME.jpg (the mask
tinted, its contour, the prompt and score) and a line of predictions.jsonl (file, prompt, score,
area, bbox [x0, y0, x1, y1], COCO RLE, ms per stage). Videos: use cris-demo.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

from ..runtime.backends import BACKENDS
from .common import UsageError, run_command

DEFAULT_OUTPUT = Path("out") / "cris_predict"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cris-predict", description="Referring segmentation on image files.",
                                epilog=__doc__.split("\n\n", 2)[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", required=True, help="an image file, a directory of images (not its subdirectories) "
                   "or a glob pattern in quotes ('**' recurses)")
    p.add_argument("--text", action="append", required=True, metavar="PROMPT",
                   help="what to segment; repeat for several prompts (each image runs them in one call)")
    p.add_argument("--engine", help="bundle directory, .engine, .onnx or PyTorch checkpoint (default: the shipped "
                   "demo model, exported once to a cached ONNX bundle)")
    p.add_argument("--server", metavar="URL", help="run on a cris-serve server instead (http://HOST:8000 or "
                   "grpc://HOST:8001; the server's model and threshold); excludes --engine, --backend, --device, "
                   "--threshold")
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                   help=f"directory for masks/, overlays/ and predictions.jsonl (default: {DEFAULT_OUTPUT})")
    p.add_argument("--backend", default="auto", choices=BACKENDS,
                   help="runtime backend: auto (default: the best available), tensorrt, openvino, onnxruntime or "
                   "pytorch")
    p.add_argument("--device", help="cpu, cuda, cuda:N or openvino:NAME (an OpenVINO device, e.g. "
                   "openvino:GPU; default: the backend's choice)")
    p.add_argument("--threshold", type=float, help="mask threshold (default: the model's, 0.35)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_command("cris-predict", _parser(), _main, argv)


def _main(args) -> int:
    # Before numpy loads (see cris-demo): OpenBLAS threads would contend with ONNX Runtime's.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    logging.basicConfig(level=logging.INFO, format="cris-predict: %(message)s")
    return _run(args)


def _run(args) -> int:
    from ..demo.predict import check_outputs, find_images, predict
    from ..runtime.segmenter import Segmenter

    if args.threshold is not None and not 0.0 <= args.threshold < 1.0:
        raise UsageError(f"--threshold must be in [0, 1), got {args.threshold}")
    prompts = list(args.text)
    for t in prompts:
        if not t.strip():
            raise UsageError("--text is empty: say what to segment")
    images = find_images(args.source)
    check_outputs(args.output, images, prompts)  # before the model loads
    if args.server:
        for option in ("engine", "backend", "device", "threshold"):
            if getattr(args, option) not in (None, "auto"):
                raise UsageError(f"--{option} applies to a local model, not to --server (the server's model runs)")
        return _predict_on_server(args, images, prompts)
    if args.engine:
        engine = Path(args.engine)
    else:
        from ..demo.defaults import demo_bundle

        try:
            engine = demo_bundle()
        except FileNotFoundError as err:  # no shipped demo model in this checkout
            raise FileNotFoundError(f"{str(err).split(';')[0]}: pass --engine (a bundle, .engine, .onnx or "
                                    "checkpoint)") from None
    with Segmenter(engine, args.backend, args.device, args.threshold) as segmenter:  # logs the backend and why
        summary = predict(segmenter, images, prompts, args.output)
        backend, model = segmenter.backend, segmenter.model
    _print_summary(summary, f"on {backend}; model {model}")
    return 0


def _predict_on_server(args, images, prompts) -> int:
    from ..demo.predict import predict
    from ..extras import missing_extra

    missing = missing_extra("serve", "cris-predict --server")
    if missing:
        raise UsageError(missing)
    from ..serve.client import Client

    with Client(args.server) as client:
        summary = predict(client, images, prompts, args.output)
    _print_summary(summary, f"on server {args.server}")
    return 0


def _print_summary(summary, where: str) -> None:
    skipped = f"; {len(summary.skipped)} unreadable skipped" if summary.skipped else ""
    print(f"cris-predict: {summary.images} images x {summary.prompts} prompts{skipped}: mean {summary.mean_ms:.1f} ms "
          f"per image {where}; wrote {summary.output}")


if __name__ == "__main__":
    sys.exit(main())
