"""The demo's pipeline: capture, inference and rendering in three threads joined by bounded
queues, so its frame rate is that of the slowest stage.

    capture thread --frames--> inference thread --results--> main thread: render, write, show

The main thread renders (so a window, which OpenCV wants on one thread, works), writes the
output video, shows the window and hands each annotated frame to a ``sink`` if one is given
(``cris-demo --serve``, which runs the pipeline in a worker thread and sets `Demo.stop` to end
it); Ctrl-C or Esc stops everything and the threads are joined.

The output video is written to a hidden temporary beside it (``.NAME.XXXXXXXX.partial.mp4``)
and renamed over the output when the run ends (at the source's end, Esc or Ctrl-C, the video
closed properly); a run that fails deletes it, and one killed outright leaves it hidden, never
a half file at the output path (the next run removes it). The output must not be the input:
`check_output`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import cv2
import numpy as np

from ..paths import check_not_input, check_writable, commit_temporary, remove_stale_temporaries, temporary_beside
from .display import Window
from .prompts import KeyEditor, Prompts, StdinReader
from .render import draw_hud, draw_masks, hud_lines
from .sources import END, CaptureThread, VideoSource, put

log = logging.getLogger("cris_edge.demo")

JOIN_TIMEOUT = 5.0
FPS_WINDOW = 30  # frames in the moving FPS of the HUD


@dataclass
class DemoStats:
    """What a run did: frames shown, seconds from the first to the last, frames the capture
    dropped (live sources), mean milliseconds per stage, and the output file."""

    frames: int = 0
    seconds: float = 0.0
    dropped: int = 0
    stage_ms: dict[str, float] = field(default_factory=dict)
    output: Optional[Path] = None

    @property
    def fps(self) -> float:
        return (self.frames - 1) / self.seconds if self.frames > 1 and self.seconds > 0 else 0.0


@dataclass(frozen=True)
class Rendered:
    """One annotated frame as the pipeline hands it to a sink: ``canvas`` (BGR uint8 [H, W, 3],
    masks and HUD drawn), ``frame`` (1-based count of frames rendered in the run: with a file
    source, never dropping a frame, frame ``k`` is the file's frame ``(k - 1) % length``), the
    moving ``fps`` (None before the second frame), the ``timings`` (ms per stage) of this frame
    and the ``prompts`` it was segmented with."""

    canvas: np.ndarray
    frame: int
    fps: Optional[float]
    timings: dict[str, float]
    prompts: tuple[str, ...]


def check_output(output: Path, inputs=(), option: str = "--output") -> None:
    """Before any work: ``output`` can be written (its directory created, a file made there) and
    is none of ``inputs`` (the source video, the model file: paths, links and hard links to them
    alike), which the demo reads while it writes the output."""
    check_writable(output, option)
    check_not_input(output, inputs, option)


class InferenceThread(threading.Thread):
    """Takes frames, runs the segmenter on the current prompts, passes (frame, results) on."""

    def __init__(self, segmenter, prompts: Prompts, frames: queue.Queue, results: queue.Queue,
                 stop: threading.Event):
        super().__init__(name="cris-demo-inference", daemon=True)
        self.segmenter, self.prompts = segmenter, prompts
        self.frames, self.results, self.stop = frames, results, stop
        self.error: Optional[BaseException] = None

    def run(self) -> None:
        try:
            while True:
                frame = self.frames.get()
                if frame is END or self.stop.is_set():
                    break
                results = self.segmenter.run(frame, self.prompts.get())
                if not put(self.results, (frame, results), self.stop):
                    break
        except BaseException as err:
            self.error = err
            self.stop.set()
        finally:
            put(self.results, END, self.stop)


class Demo:
    """One run of the demo on an opened ``source`` with ``segmenter``; ``output`` (an .mp4) and
    ``display`` (a window) are optional; with no display, prompts can be changed on
    ``stdin``; ``sink`` is called with each `Rendered` frame, in the rendering thread."""

    def __init__(self, segmenter, source: VideoSource, prompts: Prompts, output: Optional[Path] = None,
                 display: bool = False, stdin=None, max_frames: Optional[int] = None,
                 sink: Optional[Callable[[Rendered], None]] = None):
        self.segmenter, self.source, self.prompts, self.sink = segmenter, source, prompts, sink
        self.output, self.max_frames = (Path(output) if output is not None else None), max_frames
        self.stop = threading.Event()
        self.window = Window("cris-demo") if display else None
        if self.window is not None and not self.window.open:
            self.window = None
        self.editor = KeyEditor(prompts) if self.window else None
        self.stdin = None if self.window else StdinReader(prompts, stdin)
        self._writer: Optional[cv2.VideoWriter] = None
        self._size: Optional[tuple[int, int]] = None  # (width, height) of the output video
        self._partial: Optional[Path] = None  # the output while it is written

    def run(self) -> DemoStats:
        """Run to the end of the source (or Ctrl-C / Esc / window closed); re-raises an error of
        the capture or inference thread after shutting down. The output appears only at the end
        (see the module)."""
        if self.output is not None:
            remove_stale_temporaries(self.output)
            self._partial = temporary_beside(self.output)
        try:
            stats = self._run()
        except BaseException:
            if self._partial is not None:
                self._partial.unlink(missing_ok=True)
            raise
        if self._partial is not None and self.output is not None:
            if self._writer is not None:
                commit_temporary(self._partial, self.output)
            else:  # not a frame came: no video
                self._partial.unlink(missing_ok=True)
                stats.output = None
        return stats

    def _run(self) -> DemoStats:
        frames, results = queue.Queue(maxsize=2), queue.Queue(maxsize=2)
        capture = CaptureThread(self.source, frames, self.stop, self.max_frames)
        inference = InferenceThread(self.segmenter, self.prompts, frames, results, self.stop)
        stats = DemoStats(output=self.output)
        for thread in (capture, inference, self.stdin):
            if thread is not None:
                thread.start()
        try:
            self._render_loop(results, stats)
        except KeyboardInterrupt:
            log.info("interrupted: stopping")
        finally:
            self.stop.set()
            for thread in (capture, inference):
                thread.join(JOIN_TIMEOUT)
                if thread.is_alive():
                    log.warning("%s did not stop within %.0f s", thread.name, JOIN_TIMEOUT)
            if self._writer is not None:
                self._writer.release()
            if self.window is not None:
                self.window.close()
        stats.dropped = capture.dropped
        for error in (capture.error, inference.error):
            if error is not None:
                raise error
        return stats

    def _render_loop(self, results: queue.Queue, stats: DemoStats) -> None:
        card = getattr(self.segmenter, "card", None)  # the HUD names the model: its card's name, else its file
        hud_model = card.name if card is not None else getattr(self.segmenter, "model", None)
        times: deque = deque(maxlen=FPS_WINDOW)
        sums: dict[str, float] = {}
        first = None
        while True:
            item = results.get()
            if item is END:
                break
            frame, segmented = item
            now = time.perf_counter()
            times.append(now)
            first = first or now
            stats.frames += 1
            stats.seconds = now - first
            for stage, ms in segmented[0].timings.items():  # a zero-shot bundle's stages too
                sums[stage] = sums.get(stage, 0.0) + ms
                stats.stage_ms[stage] = sums[stage] / stats.frames
            fps = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else None
            canvas = draw_masks(frame, segmented)
            texts = tuple(r.text for r in segmented)
            draw_hud(canvas, hud_lines(fps, self.segmenter.backend, segmented[0].timings, texts,
                                       self.editor.line if self.editor else None, model=hud_model))
            self._write(canvas)
            if self.sink is not None:
                self.sink(Rendered(canvas, stats.frames, fps, dict(segmented[0].timings), texts))
            if self.window is not None and not self._show(canvas):
                break

    def _write(self, canvas: np.ndarray) -> None:
        if self._partial is None:
            return
        if self._writer is None:
            fps = self.source.fps or 15.0
            self._writer = cv2.VideoWriter(str(self._partial), cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                           (canvas.shape[1], canvas.shape[0]))
            if not self._writer.isOpened():
                raise RuntimeError(f"cannot write {self.output} (OpenCV's video writer did not open {self._partial})")
            self._size = (canvas.shape[1], canvas.shape[0])
        if (canvas.shape[1], canvas.shape[0]) != self._size:  # a live source changed resolution
            canvas = cv2.resize(canvas, self._size)
        self._writer.write(canvas)

    def _show(self, canvas: np.ndarray) -> bool:
        """Show ``canvas`` and handle the key typed; False when the user quits (Esc, window closed)."""
        key = self.window.show(canvas)
        return key is not None and self.editor.key(key)
