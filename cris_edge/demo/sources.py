"""Video sources of the demo and the capture thread that reads them.

A source is a camera index (``0``), a file, a network stream (``rtsp://...``, ``http://...``) or
a GStreamer pipeline (anything with ``!``, e.g. ``nvarguscamerasrc ! ... ! appsink`` on a
Jetson). Live sources (camera, stream, pipeline) are reopened with exponential backoff when they
drop, and their stale frames are dropped so inference always sees the newest one; a file is read
frame by frame to its end, which ends the demo (or, looped as ``cris-demo --serve`` loops it,
starts it again).
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np

log = logging.getLogger("cris_edge.demo")

#: Put on a queue after the last item.
END = object()
#: Seconds between attempts to reopen a dropped live source (the last one repeats).
RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0)


@dataclass(frozen=True)
class SourceSpec:
    """What to open: ``kind`` "camera" (``target`` an int index), "file", "stream" (a URL) or
    "gstreamer" (a pipeline); ``live`` sources reconnect and drop stale frames."""

    kind: str
    target: object
    live: bool

    @classmethod
    def parse(cls, source: str) -> "SourceSpec":
        """``0`` / ``/dev/video0``-style index, URL, GStreamer pipeline or file path."""
        text = str(source).strip()
        if not text:
            raise ValueError("--source is empty: give a camera index, a video file, a URL or a GStreamer pipeline")
        if text.isdigit():
            return cls("camera", int(text), True)
        if "!" in text:
            return cls("gstreamer", text, True)
        if "://" in text:
            return cls("stream", text, True)
        if not Path(text).is_file():
            raise FileNotFoundError(f"source {text!r} is not a file, camera index, URL or GStreamer pipeline")
        return cls("file", text, False)

    def describe(self) -> str:
        return f"{self.kind} {self.target}"


def open_capture(spec: SourceSpec) -> cv2.VideoCapture:
    """A ``cv2.VideoCapture`` on ``spec`` (check ``isOpened()``)."""
    if spec.kind == "gstreamer":
        return cv2.VideoCapture(spec.target, cv2.CAP_GSTREAMER)
    return cv2.VideoCapture(spec.target)


class VideoSource:
    """Reads frames from a `SourceSpec`; `reconnect` reopens it after a drop.

    ``retry_delays``: seconds between reopening attempts (the last repeats); ``max_retries``:
    attempts per reconnection (None: until stopped); ``loop``: a file starts again from its first
    frame at its end (it never ends).
    """

    def __init__(self, spec: SourceSpec, retry_delays: Sequence[float] = RETRY_DELAYS,
                 max_retries: Optional[int] = None, loop: bool = False):
        self.spec, self.loop = spec, loop and not spec.live
        self._delays, self._max_retries = tuple(retry_delays), max_retries
        self._capture = self._open()
        if self._capture is None:
            raise RuntimeError(f"cannot open {spec.describe()}"
                               + (" (no GStreamer support in this OpenCV build?)" if spec.kind == "gstreamer" else ""))
        fps = self._capture.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and 0 < fps < 1000 else None

    def _open(self) -> Optional[cv2.VideoCapture]:
        capture = open_capture(self.spec)
        if capture.isOpened():
            return capture
        capture.release()
        return None

    def read(self) -> Optional[np.ndarray]:
        """The next BGR frame, or None at the end of a file (unless looped) or when a live source
        drops."""
        if self._capture is None:
            return None
        ok, frame = self._capture.read()
        if not ok and self.loop:
            self.release()
            self._capture = self._open()
            if self._capture is None:
                return None
            ok, frame = self._capture.read()
        return frame if ok and frame is not None and frame.size else None

    def reconnect(self, stop: threading.Event) -> bool:
        """Reopen the source, waiting ``retry_delays`` between attempts; False when stopped or
        out of attempts."""
        self.release()
        attempt = 0
        while not stop.is_set() and (self._max_retries is None or attempt < self._max_retries):
            delay = self._delays[min(attempt, len(self._delays) - 1)]
            attempt += 1
            log.warning("%s dropped; reconnecting in %.1f s (attempt %d)", self.spec.describe(), delay, attempt)
            if stop.wait(delay):
                break
            self._capture = self._open()
            if self._capture is not None:
                log.info("%s reconnected", self.spec.describe())
                return True
        return False

    def release(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None


class CaptureThread(threading.Thread):
    """Reads ``source`` into ``frames`` (a bounded queue) until the end, a failed reconnection,
    ``max_frames`` frames, or ``stop``; then puts `END`. Live sources drop the oldest queued frame
    when the queue is full (inference sees the newest frame); files wait for room (no frame lost).
    ``dropped`` counts the dropped frames and ``error`` holds what ended it abnormally."""

    def __init__(self, source: VideoSource, frames: queue.Queue, stop: threading.Event,
                 max_frames: Optional[int] = None):
        super().__init__(name="cris-demo-capture", daemon=True)
        self.source, self.frames, self.stop = source, frames, stop
        self.max_frames = max_frames
        self.read_count = self.dropped = 0
        self.error: Optional[BaseException] = None

    def run(self) -> None:
        try:
            while not self.stop.is_set() and (self.max_frames is None or self.read_count < self.max_frames):
                frame = self.source.read()
                if frame is None:
                    if self.source.spec.live and self.source.reconnect(self.stop):
                        continue
                    break
                self.read_count += 1
                if self.source.spec.live:
                    self._put_latest(frame)
                elif not put(self.frames, frame, self.stop):
                    break
        except BaseException as err:  # reported by the pipeline, which then shuts down
            self.error = err
        finally:
            self.source.release()
            put(self.frames, END, self.stop)

    def _put_latest(self, frame: np.ndarray) -> None:
        while True:
            try:
                self.frames.put_nowait(frame)
                return
            except queue.Full:
                try:
                    self.frames.get_nowait()
                    self.dropped += 1
                except queue.Empty:
                    pass


def put(q: queue.Queue, item, stop: threading.Event, poll: float = 0.05) -> bool:
    """Put ``item`` on ``q``, waiting for room unless ``stop`` is set (then False); `END` is
    always delivered, displacing queued items if need be, so consumers never wait forever."""
    while True:
        try:
            q.put(item, timeout=poll)
            return True
        except queue.Full:
            if stop.is_set():
                if item is END:
                    try:
                        q.get_nowait()
                    except queue.Empty:
                        pass
                    continue
                return False
