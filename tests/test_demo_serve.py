"""``cris-demo --serve``: the address and its errors, the page's HTTP endpoints (aiohttp's test
server around a real `Publisher` and `Prompts`), and, slow, the real server: the shipped demo
model on the synthetic video in a subprocess, driven in headless Chromium (a prompt typed in
the page's box must appear as its colour over the object that `Segmenter.run` segments for it),
its frames checked against the Segmenter's masks over HTTP, Ctrl-C (exit 130) and the end of
the source (--max-frames, exit 0).

The browser test needs playwright (the [dev] extra) and a Chromium executable: Debian's
(``apt-get install chromium``; playwright's own browser download is not used), found as
``$CRIS_EDGE_CHROMIUM``, else ``chromium`` on PATH; it skips saying which is missing."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from cris_edge import Segmenter
from cris_edge.cli.demo import main as cris_demo
from cris_edge.demo import defaults
from cris_edge.demo.pipeline import Rendered
from cris_edge.demo.prompts import Prompts
from cris_edge.demo.render import ALPHA, colour, draw_masks

pytest.importorskip("aiohttp", reason="cris-demo --serve needs the [web] extra (aiohttp)")

from aiohttp.test_utils import TestClient, TestServer  # noqa: E402  (after the skip)

from cris_edge.demo.serve import Address, DemoServer, Publisher, hex_colour  # noqa: E402
from test_demo import _default_sigint, _frames  # noqa: E402  (the same SIGINT disposition and video reader)

NEW_PROMPT = "the red triangle"  # an object of the synthetic video (seed 0) besides its target
HUD_ROWS = 60  # rows the HUD may cover, skipped when frames are compared
MODEL = {"name": "tiny", "model": "tiny (tiny.pth)", "summary": "a model", "limits": "knows only shapes"}


@pytest.mark.parametrize("text, host, port", [("8080", "127.0.0.1", 8080), ("0.0.0.0:0", "0.0.0.0", 0),
                                              ("[::1]:9000", "::1", 9000), ("localhost:65535", "localhost", 65535)])
def test_addresses_are_parsed(text, host, port):
    assert Address.parse(text) == Address(host, port)


@pytest.mark.parametrize("text, message", [("host:abc", "the port must be a number"), (":8080", "no host before"),
                                           ("70000", "from 0 to 65535"), ("::1:80", "IPv6 address in brackets"),
                                           ("no-such-host.invalid:8080", "cannot resolve the host")])
def test_a_bad_address_is_one_line_exit_2(text, message, capsys):
    assert cris_demo(["--serve", text]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_a_port_in_use_is_one_line_exit_2(capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert cris_demo(["--serve", str(port)]) == 2  # before any model is loaded
    assert f"port {port} is in use" in capsys.readouterr().err


def _rendered(frame: int, prompts=("a",)) -> Rendered:
    canvas = np.zeros((48, 64, 3), np.uint8)
    canvas[:, :32] = (0, 0, 255)
    return Rendered(canvas, frame, 12.5 if frame > 1 else None, {"visual": 3.25, "head": 1.5}, tuple(prompts))


def test_the_page_status_prompts_and_stream_over_http():
    async def check():
        publisher = Publisher(asyncio.get_running_loop())
        prompts = Prompts(["the red circle"])
        server = DemoServer(publisher, prompts, MODEL, "onnxruntime", "file scene.mp4")
        async with TestClient(TestServer(server.app())) as client:
            page = await client.get("/")
            html = await page.text()
            assert page.status == 200 and page.content_type == "text/html"
            assert 'src="stream.mjpg"' in html and 'id="prompt"' in html
            status = await (await client.get("/status")).json()
            assert status["prompts"] == [{"text": "the red circle", "colour": hex_colour(0)}]
            assert status["model"] == MODEL and status["frame"] == 0 and status["fps"] is None

            for body, message in (({"prompts": [" "]}, "is empty"), ({"prompts": []}, "empty list"),
                                  ({"prompts": ["a", 3]}, "must be a str"), ({"texts": ["a"]}, "a list of prompts")):
                bad = await client.post("/prompts", json=body)
                assert bad.status == 400 and message in (await bad.json())["error"], body
            bad = await client.post("/prompts", data=b"not json")
            assert bad.status == 400 and "send JSON" in (await bad.json())["error"]
            assert prompts.get() == ["the red circle"]  # unchanged by the bad requests
            ok = await client.post("/prompts", json={"prompts": ["the red circle", " the blue square "]})
            assert ok.status == 200 and prompts.get() == ["the red circle", "the blue square"]
            assert [p["colour"] for p in (await ok.json())["prompts"]] == [hex_colour(0), hex_colour(1)]

            stream = await client.get("/stream.mjpg")
            assert stream.headers["Content-Type"].startswith("multipart/x-mixed-replace")
            for frame in (1, 2):  # published from another thread, as the demo's rendering thread does
                await asyncio.to_thread(publisher.publish, _rendered(frame))
                head = await stream.content.readuntil(b"\r\n\r\n")
                headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n")[1:] if ": " in line)
                jpeg = await stream.content.readexactly(int(headers["Content-Length"]))
                image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
                assert headers["X-Frame"] == str(frame) and image.shape == (48, 64, 3)
                assert image[:, :28, 2].min() > 200 and image[:, 36:].max() < 40  # the frame, not another
            status = await (await client.get("/status")).json()
            assert status["frame"] == 2 and status["fps"] == 12.5 and status["timings_ms"]["visual"] == 3.25
            publisher.close()  # as the server stops: the stream ends
            assert await asyncio.wait_for(stream.content.read(), 5) == b"\r\n"  # the last part's end, then EOF

    asyncio.run(check())


def test_colours_are_the_overlays():
    assert hex_colour(0) == "#3cdc3c" and colour(0) == (60, 220, 60)  # green; colour() is BGR
    assert hex_colour(2) == "#ff8c00"


# --- the real server ----------------------------------------------------------------------------


def _chromium() -> str | None:
    return os.environ.get("CRIS_EDGE_CHROMIUM") or shutil.which("chromium")


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """A cache holding the shipped demo model's bundle and the synthetic video (exported once,
    about 15 s), which the served demo's subprocess finds through $CRIS_EDGE_CACHE."""
    root = tmp_path_factory.mktemp("cache")
    defaults.demo_bundle(cache=root)
    defaults.demo_video(root)
    return root


def _start(cache: Path, *argv: str) -> tuple[subprocess.Popen, str, list[str]]:
    """``cris-demo --serve 127.0.0.1:0 ARGV`` in a subprocess: the process, its URL and its
    stderr lines up to the URL."""
    env = {**os.environ, "CRIS_EDGE_CACHE": str(cache)}
    process = subprocess.Popen([sys.executable, "-m", "cris_edge.cli.demo", "--serve", "127.0.0.1:0", *argv],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=env, preexec_fn=_default_sigint)
    lines = []
    for line in process.stderr:
        lines.append(line)
        if "serving on " in line:
            return process, line.split("serving on ")[1].split()[0], lines
    process.wait(30)
    pytest.fail(f"the server did not start (exit {process.returncode}):\n{''.join(lines)}")


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def _parts(url: str, after: int):
    """(frame number, BGR image) of the served stream's frames numbered above ``after``."""
    with urllib.request.urlopen(url + "stream.mjpg", timeout=60) as stream:
        while True:
            headers = {}
            while (line := stream.readline().decode().strip()) != "" or not headers:
                if ": " in line:
                    key, value = line.split(": ", 1)
                    headers[key] = value
            jpeg = stream.read(int(headers["Content-Length"]))
            if int(headers["X-Frame"]) > after:
                yield int(headers["X-Frame"]), cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)


def _wait_for_frame(url: str, frame: int, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while (status := _get(url + "status"))["frame"] <= frame:
        assert time.monotonic() < deadline, f"no frame after {frame} within {timeout} s: {status}"
        time.sleep(0.2)
    return status


@pytest.mark.slow
def test_a_prompt_typed_in_the_browser_is_segmented_in_the_stream(cache, tmp_path):
    pytest.importorskip("playwright", reason="the browser test needs playwright (the [dev] extra)")
    if _chromium() is None:
        pytest.skip("no Chromium: install Debian's (apt-get install chromium) or set CRIS_EDGE_CHROMIUM "
                    "(playwright's own browser download is not used)")
    from playwright.sync_api import expect, sync_playwright

    bundle = defaults.demo_bundle(cache=cache)
    video, target = defaults.demo_video(cache)
    source = _frames(video)
    segmenter = Segmenter(bundle)
    new_mask = segmenter.run(source[0], NEW_PROMPT).mask.astype(bool)
    assert new_mask.sum() > 500  # the demo model finds the triangle: the check below has something to see
    process, url, _ = _start(cache)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=_chromium())
            page = browser.new_page(viewport={"width": 1040, "height": 560})
            page.goto(url)
            expect(page.locator("#model")).to_have_text("cris_tiny_synthetic", timeout=60_000)
            expect(page.locator("#limits")).to_contain_text("knows only synthetic shapes")
            expect(page.locator("#prompts li .text")).to_have_text([target])
            page.fill("#prompt", " ")
            page.press("#prompt", "Enter")
            expect(page.locator("#error")).to_contain_text("type a prompt")
            page.fill("#prompt", NEW_PROMPT)
            page.press("#prompt", "Enter")
            expect(page.locator("#prompts li .text")).to_have_text([target, NEW_PROMPT])
            expect(page.locator("#prompts li .swatch").nth(1)).to_have_css(
                "background-color", "rgb({}, {}, {})".format(*colour(1)[::-1]))
            expect(page.locator("#error")).to_have_text("")
            status = _get(url + "status")
            assert [p["text"] for p in status["prompts"]] == [target, NEW_PROMPT]
            # frames in flight when the prompts changed (the pipeline's queues) still show the old ones
            status = _wait_for_frame(url, status["frame"] + 10)
            expect(page.locator("#fps")).not_to_have_text("--")
            assert status["fps"] > 0 and set(status["timings_ms"]) >= {"visual", "head"}
            page.wait_for_timeout(500)
            shown = cv2.imdecode(np.frombuffer(page.locator("#stream").screenshot(), np.uint8), cv2.IMREAD_COLOR)
            page.screenshot(path=str(tmp_path / "page.png"), full_page=True)  # docs/images/demo-serve.png
            browser.close()
        # the displayed frame (the page scales it) shows the triangle tinted in the new prompt's colour
        shown = cv2.resize(shown, source[0].shape[1::-1], interpolation=cv2.INTER_AREA)
        tinted = np.median(source[0][new_mask], axis=0) * (1 - ALPHA) + np.array(colour(1)) * ALPHA
        near = (np.abs(shown.astype(np.int16) - tinted).max(axis=2) < 30)[HUD_ROWS:]
        assert near.sum() > 0.5 * new_mask.sum(), (near.sum(), new_mask.sum(), tinted)

        # the served frames are the Segmenter's overlay of both prompts on the source frames
        checked = 0
        for number, served in _parts(url, status["frame"]):
            frame = source[(number - 1) % len(source)]
            results = segmenter.run(frame, [target, NEW_PROMPT])
            expected = draw_masks(frame, results).astype(np.int16)
            error = np.abs(served.astype(np.int16) - expected)[HUD_ROWS:]
            assert error.mean() < 4, (number, error.mean())  # JPEG noise only
            inside = cv2.erode(results[1].mask, np.ones((5, 5), np.uint8)).astype(bool)
            inside[:HUD_ROWS] = False
            blended = frame[inside] * (1 - ALPHA) + np.array(colour(1)) * ALPHA
            assert inside.sum() > 200 and np.abs(served[inside] - blended).mean() < 12
            checked += 1
            if checked == 3:
                break
        process.send_signal(signal.SIGINT)  # Ctrl-C: clean shutdown, exit 130
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 130, stderr
        assert "cris-demo: interrupted" in stderr and "Traceback" not in stderr
        with pytest.raises(urllib.error.URLError):
            _get(url + "status")
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


@pytest.mark.slow
def test_the_server_stops_when_the_source_ends(cache):
    process, url, _ = _start(cache, "--max-frames", "5")
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    assert "the source ended: stopping the server" in stderr and "5 frames in" in stdout
    assert "wrote" not in stdout  # no video unless --output
