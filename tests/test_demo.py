"""``cris-demo``: sources and reconnection (on real video files, made unreadable to simulate a
dropped camera), the capture thread's frame policy, prompts from stdin and the keyboard, the
overlay, the display's soft failure, the cached default model and video, and whole runs in
``--no-display`` mode on a generated scene video (one exports a random cris_tiny, about 15 s).
The overlay is checked against the Segmenter's own masks; with the shipped demo model, also
against the target shape's ground truth."""

from __future__ import annotations

import io
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from cris_edge import Segmenter
from cris_edge.cli.demo import main as cris_demo
from cris_edge.data.synthetic import render_video, scene_frames
from cris_edge.demo import defaults
from cris_edge.demo.display import Window, no_display_reason
from cris_edge.demo.prompts import KeyEditor, Prompts, StdinReader, parse_prompts
from cris_edge.demo.render import ALPHA, colour, draw_hud, draw_masks, hud_lines
from cris_edge.demo.sources import END, CaptureThread, SourceSpec, VideoSource
from cris_edge.runtime.result import SegmentationResult
from cris_edge.runtime.selection import openvino_instead

FAST_RETRY = (0.01, 0.02)


class _RecordedWaits(threading.Event):
    """A stop event that records the timeouts it is waited on with (the reconnection backoff)."""

    def __init__(self):
        super().__init__()
        self.waits = []

    def wait(self, timeout=None):
        self.waits.append(timeout)
        return super().wait(timeout)


def _frames(path: Path) -> list[np.ndarray]:
    capture, out = cv2.VideoCapture(str(path)), []
    while True:
        ok, frame = capture.read()
        if not ok:
            return out
        out.append(frame)


def _read_all(source: VideoSource) -> int:
    count = 0
    while source.read() is not None:
        count += 1
    return count


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("video") / "scene.mp4"
    return path, render_video(str(path), num_frames=12, fps=10, seed=3)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def bundle(checkpoint, cache) -> Path:
    return defaults.demo_bundle(checkpoint, cache)


@pytest.mark.parametrize("text, kind, live", [("0", "camera", True), ("rtsp://cam/stream", "stream", True),
                                              ("v4l2src ! videoconvert ! appsink", "gstreamer", True)])
def test_sources_are_parsed(text, kind, live):
    spec = SourceSpec.parse(text)
    assert (spec.kind, spec.live) == (kind, live)


def test_a_file_source_is_not_live_and_a_missing_one_is_refused(video, tmp_path):
    assert SourceSpec.parse(str(video[0])) == SourceSpec("file", str(video[0]), False)
    with pytest.raises(FileNotFoundError, match="not a file, camera index"):
        SourceSpec.parse(str(tmp_path / "missing.mp4"))
    with pytest.raises(ValueError, match="empty"):
        SourceSpec.parse(" ")


def test_a_dropped_live_source_is_reopened_and_given_up_on_when_gone(video, tmp_path):
    path = tmp_path / "camera.mp4"
    path.write_bytes(video[0].read_bytes())
    source = VideoSource(SourceSpec("file", str(path), live=True), retry_delays=FAST_RETRY, max_retries=3)
    stop = threading.Event()
    assert _read_all(source) == 12  # ... then the "camera" drops
    assert source.reconnect(stop) and source.read() is not None  # reopened
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])  # partial: no longer opens
    waited = _RecordedWaits()
    assert not source.reconnect(waited)
    assert waited.waits == [*FAST_RETRY, FAST_RETRY[-1]]  # backoff, 3 attempts (the last delay repeats)
    stop.set()
    assert not VideoSource(SourceSpec("file", str(video[0]), live=True)).reconnect(stop)  # stopped: no wait
    with pytest.raises(RuntimeError, match="cannot open"):
        VideoSource(SourceSpec("file", str(path), live=False))


def test_file_frames_are_never_dropped(video):
    frames, stop = queue.Queue(maxsize=2), threading.Event()
    capture = CaptureThread(VideoSource(SourceSpec.parse(str(video[0]))), frames, stop)
    capture.start()
    got = []
    while (item := frames.get(timeout=10)) is not END:
        time.sleep(0.01)  # a slow consumer
        got.append(item)
    capture.join(5)
    assert len(got) == 12 and capture.dropped == 0 and capture.error is None
    assert all(np.array_equal(a, b) for a, b in zip(got, _frames(video[0])))


def test_live_frames_are_dropped_when_stale_and_the_source_reconnects(video, tmp_path):
    path = tmp_path / "live.mp4"
    path.write_bytes(video[0].read_bytes())
    frames, stop = queue.Queue(maxsize=1), threading.Event()
    source = VideoSource(SourceSpec("file", str(path), live=True), retry_delays=FAST_RETRY, max_retries=2)
    capture = CaptureThread(source, frames, stop, max_frames=30)  # 30 > 12: reconnects twice
    capture.start()
    # Nothing is taken until all 30 frames are read: each frame after the first displaces the
    # stale one queued before it (29 dropped), then END waits for room.
    deadline = time.monotonic() + 30
    while capture.dropped < 29 and capture.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    got = []
    while (item := frames.get(timeout=10)) is not END:
        got.append(item)
    capture.join(5)
    assert capture.error is None and capture.read_count == 30 and capture.dropped == 29 and len(got) == 1
    assert np.array_equal(got[0], _frames(video[0])[30 - 2 * 12 - 1])  # the newest: frame 6 of the third pass


def test_capture_ends_with_end_when_a_live_source_is_gone(video, tmp_path):
    path = tmp_path / "gone.mp4"
    path.write_bytes(video[0].read_bytes())
    frames, stop = queue.Queue(maxsize=64), threading.Event()
    source = VideoSource(SourceSpec("file", str(path), live=True), retry_delays=FAST_RETRY, max_retries=2)
    path.unlink()  # already open: reads to the end, then cannot reopen
    capture = CaptureThread(source, frames, stop)
    capture.start()
    capture.join(10)
    items = list(frames.queue)
    assert not capture.is_alive() and items[-1] is END and len(items) == 13


def test_prompts_from_stdin_and_the_keyboard():
    assert parse_prompts(" the red circle ;; the blue box ") == ["the red circle", "the blue box"]
    with pytest.raises(ValueError):
        parse_prompts(" ; ")
    prompts = Prompts(["a red circle"])
    reader = StdinReader(prompts, io.StringIO("\nthe blue square; the star\n"))
    reader.start()
    reader.join(5)
    assert not reader.is_alive() and prompts.get() == ["the blue square", "the star"]
    StdinReader(prompts, None).run()  # no stdin (CI): returns at once
    editor = KeyEditor(prompts)
    for key in b"the ring":
        assert editor.key(key)
    assert editor.line == "the ring" and editor.key(8) and editor.line == "the rin"
    assert editor.key(-1) and editor.key(ord("g")) and editor.key(13)
    assert prompts.get() == ["the ring"] and editor.line == ""
    assert editor.key(ord("x")) and editor.key(27) and editor.line == ""  # Esc clears the line
    assert not editor.key(27)  # Esc on an empty line quits


def test_overlay_colours_the_masks_and_outlines_them():
    frame = np.full((60, 80, 3), 100, np.uint8)
    masks = [np.zeros((60, 80), np.uint8) for _ in range(2)]
    masks[0][10:30, 10:30], masks[1][35:55, 40:75] = 1, 1
    results = [SegmentationResult(t, m) for t, m in zip(("a", "b"), masks)]
    out = draw_masks(frame, results)
    for i, mask in enumerate(masks):
        inner = cv2.erode(mask, np.ones((7, 7), np.uint8)).astype(bool)
        expected = (100 * (1 - ALPHA) + np.array(colour(i)) * ALPHA).astype(np.uint8)
        assert (out[inner] == expected).all()
    far = cv2.dilate(masks[0] | masks[1], np.ones((7, 7), np.uint8)) == 0
    assert (out[far] == 100).all() and (frame == 100).all()
    lines = hud_lines(12.5, "onnxruntime", {"visual": 3.0}, ["a", "b"], "typed")
    assert lines[0][0].startswith("12.5 FPS") and lines[2] == ("[1] a", colour(0)) and "typed" in lines[-1][0]
    draw_hud(out, lines)
    assert (out[:5, :40] != frame[:5, :40]).any()
    named = hud_lines(12.5, "onnxruntime", {"visual": 3.0}, ["a"], model="cris_tiny_synthetic")
    assert named[0][0] == "12.5 FPS  onnxruntime  model cris_tiny_synthetic" and named[2] == ("[1] a", colour(0))


def test_hud_is_small_and_translucent_on_a_small_frame():
    lines = hud_lines(30.0, "onnxruntime", {"visual": 3.0, "head": 1.5}, ["the person on the left"])
    outs = {}
    for value in (40, 200):
        frame = np.full((240, 320, 3), value, np.uint8)
        outs[value] = out = frame.copy()
        draw_hud(out, lines)
        band_rows = np.nonzero((out != frame).any(axis=(1, 2)))[0]
        assert len(band_rows) and band_rows.max() + 1 <= 0.15 * 240, band_rows.max()
    # under the band, away from the text, the frame shows through (darkened, not replaced)
    under = outs[200][1:3, :, 0]  # the band's top rows hold no text
    darkened = under[under != 200]
    assert darkened.size and 0 < int(np.median(darkened)) < 200
    assert int(np.median(outs[200][1:3, :20])) > int(np.median(outs[40][1:3, :20]))
    hd = np.zeros((720, 1280, 3), np.uint8)
    draw_hud(hd, lines)  # larger frames get larger text, still within the band's share
    rows = np.nonzero(hd.any(axis=(1, 2)))[0]
    assert 40 < rows.max() + 1 <= 0.15 * 720


def test_display_fails_soft(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    if sys.platform.startswith("linux"):
        assert "DISPLAY" in no_display_reason()
    window = Window("test")
    if window.open:
        window.close()
        pytest.skip("this OpenCV has a GUI")
    assert window.show(np.zeros((4, 4, 3), np.uint8)) is None


@pytest.mark.slow
def test_default_model_is_exported_once_and_cached(bundle, checkpoint, cache):
    assert bundle.parent == cache / "bundles" and bundle.name.startswith("tiny-")
    config_mtime = (bundle / "config.json").stat().st_mtime_ns
    assert defaults.demo_bundle(checkpoint, cache) == bundle
    assert (bundle / "config.json").stat().st_mtime_ns == config_mtime
    assert not list(bundle.parent.glob(".*"))  # no staging leftovers
    first, expression = defaults.demo_video(cache)
    assert defaults.demo_video(cache) == (first, expression) and expression.startswith("the ")
    assert len(_frames(first)) == defaults.VIDEO_FRAMES


def _changed(output: np.ndarray, source: np.ndarray) -> np.ndarray:
    """Pixels the overlay changed (beyond mp4 re-encoding noise), below the HUD."""
    changed = np.abs(output.astype(np.int16) - source.astype(np.int16)).max(axis=2) > 40
    changed[:60] = False
    return changed


@pytest.mark.slow
def test_no_display_run_writes_the_overlay_where_the_segmenter_says(bundle, video, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    out = tmp_path / "out.mp4"
    source = _frames(video[0])
    seg = Segmenter(bundle)  # random weights: threshold at the median so that masks cover about half
    seg.threshold = float(np.median(seg.run(source[0], video[1], return_prob=True).prob))
    argv = ["--source", str(video[0]), "--text", video[1], "--engine", str(bundle), "--output", str(out),
            "--threshold", str(seg.threshold)]
    assert cris_demo(argv) == 0
    printed = capsys.readouterr().out
    assert "12 frames in" in printed and f"FPS on {seg.backend.split()[0]}" in printed and f"wrote {out}" in printed
    written = _frames(out)
    assert len(written) == 12 and written[0].shape == source[0].shape
    for frame, annotated in zip(source, written):
        expected = draw_masks(frame, [seg.run(frame, video[1])]).astype(np.int16)
        error = np.abs(annotated.astype(np.int16) - expected)[60:]  # below the HUD
        assert error.mean() < 4, error.mean()  # the overlay is where the masks are (mp4 noise aside)
    assert np.abs(expected - source[-1])[60:].mean() > 4 * error.mean()  # and it is visible


def test_text_is_required_with_a_source_and_bad_options_are_errors(video, tmp_path, capsys):
    # bad input: one line, exit 2 (docs/demo.md)
    assert cris_demo(["--source", str(video[0]), "--no-display"]) == 2
    assert "--text is required" in capsys.readouterr().err
    assert cris_demo(["--source", "missing.mp4", "--text", "a", "--no-display"]) == 2
    assert "not a file" in capsys.readouterr().err
    assert cris_demo(["--max-frames", "0", "--no-display"]) == 2
    assert "--max-frames must be >= 1" in capsys.readouterr().err
    assert cris_demo(["--source", str(video[0]), "--text", "a", "--engine", "missing_bundle", "--no-display",
                      "--output", str(tmp_path / "out.mp4")]) == 2
    assert "missing_bundle does not exist" in capsys.readouterr().err


def _default_sigint() -> None:
    # A shell starts background jobs with SIGINT ignored, children inherit that and Python then
    # installs no KeyboardInterrupt handler: give the demo the disposition a terminal gives it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_keeps_the_output(checkpoint, tmp_path):
    long_video = tmp_path / "long.mp4"
    text = render_video(str(long_video), num_frames=400, fps=15, seed=1)
    out = tmp_path / "out.mp4"
    env = {**os.environ, "CRIS_EDGE_CACHE": str(tmp_path / "cache")}
    env.pop("DISPLAY", None)
    process = subprocess.Popen([sys.executable, "-m", "cris_edge.cli.demo", "--source", str(long_video), "--text",
                                text, "--engine", str(checkpoint), "--output", str(out)],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=env, preexec_fn=_default_sigint)
    deadline = time.time() + 120
    # the writer opens with the first frame, under a hidden name until the run ends
    while not any(p.stat().st_size for p in tmp_path.glob(".out.*.partial.mp4")) and time.time() < deadline:
        time.sleep(0.2)
    assert not out.exists()
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert "interrupted: stopping" in stderr and f"wrote {out}" in stdout
    assert 0 < len(_frames(out)) < 400
    assert not list(tmp_path.glob(".out.*"))  # renamed into place


@pytest.mark.slow
def test_the_readme_command_runs_the_demo_model_on_the_synthetic_video(tmp_path, monkeypatch, capsys, caplog):
    monkeypatch.setenv("CRIS_EDGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.chdir(tmp_path)
    caplog.set_level("INFO")
    assert cris_demo([]) == 0
    # the model is named at start, with its card's limits line (exported from the shipped card)
    assert "model: cris_tiny_synthetic (cris_tiny_synthetic.pth)" in caplog.text
    assert "model limits: knows only synthetic shapes and colours" in caplog.text
    printed = capsys.readouterr().out
    auto = "openvino" if openvino_instead(None) else "onnxruntime"  # a bundle without engines, on this CPU
    assert f"FPS on {auto}" in printed and f"wrote {Path('out', 'cris_demo.mp4')}" in printed
    written = _frames(tmp_path / "out" / "cris_demo.mp4")
    source = _frames(defaults.demo_video()[0])
    truth = [f.mask.astype(bool) for f in scene_frames(defaults.VIDEO_FRAMES, defaults.VIDEO_SEED)]
    assert len(written) == defaults.VIDEO_FRAMES
    on_target, covered = [], []
    for k in range(0, defaults.VIDEO_FRAMES, 10):  # the overlay sits on the target shape
        changed = _changed(written[k], source[k])
        near = cv2.dilate(truth[k].astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)  # + the contour
        on_target.append((changed & near).sum() / max(changed.sum(), 1))
        covered.append((changed & truth[k])[60:].sum() / max(truth[k][60:].sum(), 1))
    assert np.median(on_target) >= 0.9 and np.median(covered) >= 0.7, (on_target, covered)
