"""End-to-end FPS of the demo pipeline (capture, inference and rendering threads, as `cris-demo`
runs them) on the demo's generated video, and a memory soak test.

    python benchmarks/stream.py                                  # 1, 2, 4 prompts x text cache on/off
    python benchmarks/stream.py --engine bundles/r50_fp16 --prompts 1,4 --frames 300 --json stream.json
    python benchmarks/stream.py --soak --frames 10000            # memory at start, middle, end

FPS mode: for each prompt count and the text cache on and off, `cris_edge.demo.pipeline.Demo`
runs ``--frames`` frames (default: the video's 90; the video loops when more are asked for)
with no window and no output file, after a short warm-up; FPS = (frames - 1) / seconds from the
first result to the last, as the demo reports it. With the cache off the text graph runs for
every prompt on every frame; with it on, once per prompt.

Soak mode: one run (the first prompt count, cache on) of ``--frames`` frames (default 10000),
sampling resident memory (and GPU memory where CUDA exists) after the warm-up frames ("start"),
at the middle and at the end. Growth beyond ``--max-growth`` percent from start to end is
flagged and the exit status is 1.

Defaults: the shipped demo model's cached FP32 ONNX bundle and the demo's synthetic scene video
(as `cris-demo` with no arguments). Memory is MiB; exit status 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

# As cris-demo does, before numpy loads: OpenBLAS threads would contend with ONNX Runtime's and the
# pipeline's own threads in the post-processing's small matrix products.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402  (benchmarks/ is not a package)
from cris_edge.demo.sources import SourceSpec, VideoSource  # noqa: E402
from cris_edge.runtime.result import STAGES  # noqa: E402
from cris_edge.runtime.backends import BACKENDS  # noqa: E402

#: Prompts added to the video's own expression for runs with several prompts (all distinct).
EXTRA_PROMPTS = ("the blue square", "the green triangle", "the yellow star", "the purple ring", "the white hexagon",
                 "the orange diamond", "the red circle")
SOAK_FRAMES, FPS_FRAMES, WARMUP_FRAMES = 10_000, 90, 5
MAX_GROWTH = 5.0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="benchmarks/stream.py", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--engine", type=Path, help="bundle directory, .engine, .onnx or checkpoint (default: the shipped "
                   "demo model's cached ONNX bundle)")
    p.add_argument("--backend", default="auto", choices=BACKENDS)
    p.add_argument("--device", help="cpu, cuda, cuda:N or openvino:NAME (an OpenVINO device, e.g. "
                   "openvino:GPU; default: the backend's choice)")
    p.add_argument("--video", type=Path, help="video file (default: the demo's synthetic scene video)")
    p.add_argument("--prompts", default="1,2,4", help="comma-separated prompt counts (default 1,2,4)")
    p.add_argument("--frames", type=int, help=f"frames per run (default {FPS_FRAMES}; --soak: {SOAK_FRAMES})")
    p.add_argument("--soak", action="store_true", help="one long run that samples memory (start, middle, end)")
    p.add_argument("--max-growth", type=float, default=MAX_GROWTH,
                   help=f"--soak: memory growth in percent, start to end, that fails the run (default {MAX_GROWTH})")
    p.add_argument("--json", type=Path, help="write the results as JSON here")
    p.add_argument("--markdown", type=Path, help="write the markdown tables here")
    return p


def _counts(text: str) -> list[int]:
    """``"1,2,4"`` -> [1, 2, 4]; ValueError naming a bad count."""
    try:
        counts = [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        raise ValueError(f"--prompts takes comma-separated whole numbers, got {text!r}") from None
    if not counts or any(not 1 <= c <= 1 + len(EXTRA_PROMPTS) for c in counts):
        raise ValueError(f"--prompts: each count must be 1 to {1 + len(EXTRA_PROMPTS)}, got {text!r}")
    return list(dict.fromkeys(counts))


def prompts_for(expression: str, count: int) -> list[str]:
    """The video's ``expression`` then distinct extra prompts, ``count`` in all."""
    extra = [p for p in EXTRA_PROMPTS if p != expression]
    return [expression, *extra[:count - 1]]


class LoopingSource(VideoSource):
    """A video file read from the start again at its end (runs longer than the file)."""

    def __init__(self, path: Path):
        super().__init__(SourceSpec.parse(str(path)))

    def read(self):
        frame = super().read()
        if frame is None:  # end of the file: reopen it
            self.release()
            self._capture = self._open()
            frame = super().read()
        return frame


class MeteredSegmenter:
    """A `Segmenter` as the demo uses it (``run``, ``backend``) that counts frames, samples
    memory after the frame numbers in ``marks`` ({frame: label}) and prints progress every
    ``every`` frames (0: never)."""

    def __init__(self, segmenter, marks: Optional[dict] = None, every: int = 0, total: int = 0):
        self.segmenter, self.marks, self.every, self.total = segmenter, marks or {}, every, total
        self.frames, self.samples = 0, {}

    @property
    def backend(self) -> str:
        return self.segmenter.backend

    def run(self, frame, texts):
        out = self.segmenter.run(frame, texts)
        self.frames += 1
        if self.frames in self.marks:
            self.samples[self.marks[self.frames]] = {"frame": self.frames, "rss_mib": common.rss_mib(),
                                                     "device_mib": common.device_used_mib()}
        if self.every and self.frames % self.every == 0:
            common.progress(f"  {self.frames}/{self.total} frames, RSS {common.rss_mib()} MiB")
        return out


def run_demo(segmenter, video: Path, texts: list[str], frames: int, cache: bool):
    """One `Demo` run of ``frames`` frames with no window and no output file; its `DemoStats`."""
    from cris_edge.demo.pipeline import Demo
    from cris_edge.demo.prompts import Prompts
    from cris_edge.runtime.text_cache import TextCache

    target = getattr(segmenter, "segmenter", segmenter)
    target.text_cache = TextCache(256 if cache else 0)
    return Demo(segmenter, LoopingSource(video), Prompts(texts), None, False, None, frames).run()


def fps_runs(segmenter, video: Path, expression: str, counts: Sequence[int], frames: int) -> list[dict]:
    """For each prompt count, text cache on and off: frames, seconds, FPS, mean ms per stage,
    and the process's resident memory after the run."""
    run_demo(segmenter, video, prompts_for(expression, max(counts)), WARMUP_FRAMES, cache=True)  # warm-up
    runs = []
    for count in counts:
        for cache in (True, False):
            texts = prompts_for(expression, count)
            stats = run_demo(segmenter, video, texts, frames, cache)
            runs.append({"prompts": count, "text_cache": cache, "texts": texts, "frames": stats.frames,
                         "seconds": stats.seconds, "fps": stats.fps,
                         "ms_per_frame": 1e3 / stats.fps if stats.fps else None,
                         "stage_ms": dict(stats.stage_ms), "rss_mib": common.rss_mib()})
            common.progress(f"{count} prompt(s), text cache {'on' if cache else 'off'}: {stats.frames} frames, "
                            f"{stats.fps:.1f} FPS")
    return runs


def soak_marks(frames: int) -> dict[int, str]:
    """{frame number: label} of the soak's memory samples: after the warm-up, middle, end."""
    start = max(1, min(100, frames // 10))
    return {start: "start", max(start, frames // 2): "middle", frames: "end"}


def growth(samples: dict, key: str) -> Optional[float]:
    """Percent growth of ``samples[...][key]`` from "start" to "end" (None when not measured)."""
    first, last = samples.get("start", {}).get(key), samples.get("end", {}).get(key)
    return None if not first or last is None else 100.0 * (last - first) / first


def check_growth(samples: dict, limit: float) -> list[str]:
    """The problems of a soak: each memory (host RSS, GPU) that grew more than ``limit`` %."""
    problems = []
    for key, what in (("rss_mib", "resident memory"), ("device_mib", "GPU memory")):
        pct = growth(samples, key)
        if pct is not None and pct > limit:
            problems.append(f"{what} grew {pct:.1f}% from frame {samples['start']['frame']} to "
                            f"{samples['end']['frame']} ({samples['start'][key]} -> {samples['end'][key]} MiB), "
                            f"more than {limit}%")
    return problems


def soak(segmenter, video: Path, texts: list[str], frames: int, limit: float) -> dict:
    """The soak run: memory samples, growth per memory, problems (see `check_growth`)."""
    metered = MeteredSegmenter(segmenter, soak_marks(frames), every=max(1, frames // 10), total=frames)
    stats = run_demo(metered, video, texts, frames, cache=True)
    samples = metered.samples
    return {"frames": stats.frames, "fps": stats.fps, "texts": texts, "samples": samples,
            "rss_growth_pct": growth(samples, "rss_mib"), "device_growth_pct": growth(samples, "device_mib"),
            "max_growth_pct": limit, "problems": check_growth(samples, limit)}


def markdown(result: dict) -> str:
    """The FPS table and, after a soak, the memory table and its verdict."""
    mach = result["machine"]
    lines = [f"Demo pipeline on {result['video']['path']} ({result['video']['height']}x{result['video']['width']}), "
             f"{result['backend']}; {mach['cpu']}, {mach['logical_cpus']} CPUs; load average "
             f"{mach['load_average_start']} -> {mach['load_average_end']}.", ""]
    if result["runs"]:
        lines.append(common.markdown_table(
            ["prompts", "text cache", "frames", "FPS", "ms/frame", *STAGES, "RSS MiB"],
            [[r["prompts"], "on" if r["text_cache"] else "off", r["frames"], r["fps"], r["ms_per_frame"],
              *(r["stage_ms"].get(s) for s in STAGES), r["rss_mib"]] for r in result["runs"]]))
    if result["soak"]:
        s = result["soak"]
        lines += [f"Soak: {s['frames']} frames at {s['fps']:.1f} FPS, {len(s['texts'])} prompt(s), text cache on.", ""]
        lines.append(common.markdown_table(["sample", "frame", "RSS MiB", "GPU MiB"],
                                           [[k, v["frame"], v["rss_mib"], v["device_mib"]]
                                            for k, v in s["samples"].items()]))
        verdict = "; ".join(s["problems"]) or f"no growth above {s['max_growth_pct']}%"
        gpu = "not measured" if s["device_growth_pct"] is None else f"{s['device_growth_pct']:.2f}%"
        lines += ["", f"Growth from start to end: RSS {common.fmt(s['rss_growth_pct'], 2)}%, GPU {gpu}: {verdict}."]
    return "\n".join(lines) + "\n"


def _inputs(args) -> tuple[Path, Path, str]:
    """(engine, video, its expression): the demo's cached defaults where not given."""
    from cris_edge.demo.defaults import demo_bundle, demo_video

    video, expression = (args.video, "the object") if args.video else demo_video()
    if args.video and not args.video.is_file():
        raise FileNotFoundError(f"--video {args.video}: no such file")
    if args.engine is not None and not args.engine.exists():
        raise FileNotFoundError(f"--engine {args.engine}: no such bundle, engine or checkpoint")
    if args.engine is None:
        common.progress("using the shipped demo model's ONNX bundle (exported once into the cache if missing)")
    return args.engine or demo_bundle(), video, expression


def _video_info(video: Path) -> dict:
    import cv2

    capture = cv2.VideoCapture(str(video))
    info = {"path": str(video), "frames": int(capture.get(cv2.CAP_PROP_FRAME_COUNT)),
            "height": int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)), "width": int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))}
    capture.release()
    return info


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="stream.py: %(message)s")
    started = common.machine()
    try:
        counts = _counts(args.prompts)
        frames = args.frames or (SOAK_FRAMES if args.soak else FPS_FRAMES)
        if frames < 2:
            raise ValueError(f"--frames must be >= 2, got {frames}")
        engine, video, expression = _inputs(args)
        from cris_edge.runtime.segmenter import Segmenter
        segmenter = Segmenter(engine, args.backend, args.device)
    except (ValueError, FileNotFoundError) as err:
        print(f"stream.py: error: {err}", file=sys.stderr)
        return 2
    common.progress(f"{segmenter.backend}; {frames} frames per run")
    runs = [] if args.soak else fps_runs(segmenter, video, expression, counts, frames)
    soaked = soak(segmenter, video, prompts_for(expression, counts[0]), frames, args.max_growth) if args.soak else None
    segmenter.close()
    result = {"machine": {**started, "load_average_end": common.load_average()}, "versions": common.versions(),
              "engine": str(engine), "backend": segmenter.backend, "video": _video_info(video), "runs": runs,
              "soak": soaked}
    table = markdown(result)
    print(table)
    common.write_json(args.json, result)
    common.write_text(args.markdown, table, "markdown")
    for problem in (soaked or {}).get("problems", []):
        print(f"stream.py: MEMORY GROWTH: {problem}", file=sys.stderr)
    return 1 if soaked and soaked["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
