"""``cris-demo --serve``: the demo on a web page, for a headless device on the network.

    GET  /             the page (web/index.html: one static file, no build step)
    GET  /stream.mjpg  the annotated frames as MJPEG (multipart/x-mixed-replace), each part with
                       an ``X-Frame`` header: the frame's number (`Rendered.frame`)
    GET  /status       JSON: the model and its card's limits, the backend, the source, the
                       prompts with their colours, the last frame's number, FPS and ms per stage
    POST /prompts      JSON ``{"prompts": ["the red car", ...]}``: replaces the prompts; 400 with
                       ``{"error": ...}`` naming what is wrong

The demo pipeline (`cris_edge.demo.pipeline.Demo`: capture, segmentation, rendering) runs in a
worker thread as it runs under a window; its rendering thread JPEG-encodes each annotated frame
and hands it to the `Publisher`, which the server's handlers wait on. The server only adds
transport: the asyncio loop does no segmentation and no encoding.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import json
import logging
import socket
import threading
from dataclasses import dataclass
from importlib import resources
from typing import Optional

import cv2
from aiohttp import web

from ..runtime.result import STAGES
from .pipeline import JOIN_TIMEOUT, Demo, DemoStats, Rendered
from .prompts import Prompts
from .render import colour

log = logging.getLogger("cris_edge.demo")

DEFAULT_HOST = "127.0.0.1"
JPEG_QUALITY = 85
#: Seconds the server waits for open connections (a stream being written) when it stops.
SHUTDOWN_TIMEOUT = 2.0
_BOUNDARY = "frame"


@dataclass(frozen=True)
class Address:
    """Where to listen: ``host`` (a name or an IP address, IPv6 without brackets) and ``port``
    (0: any free port)."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> "Address":
        """``PORT``, ``HOST:PORT`` or ``[IPV6]:PORT``; a port alone listens on `DEFAULT_HOST`.
        ValueError naming what is wrong."""
        given = str(text).strip()
        host, colon, port = given.rpartition(":")
        if not colon:
            host = DEFAULT_HOST
        elif host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        elif ":" in host:
            raise ValueError(f"--serve {given!r}: write an IPv6 address in brackets, e.g. [::1]:8080")
        if colon and not host:
            raise ValueError(f"--serve {given!r}: no host before ':'; give HOST:PORT (e.g. 0.0.0.0:8080 for every "
                             f"interface) or a port alone for {DEFAULT_HOST}")
        if not port.isdigit() or int(port) > 65535:
            raise ValueError(f"--serve {given!r}: the port must be a number from 0 to 65535 (0: any free port); "
                             "give [HOST:]PORT, e.g. 8080 or 0.0.0.0:8080")
        return cls(host, int(port))

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def listen(address: Address) -> socket.socket:
    """A socket listening on ``address`` (before any other work, so that a port in use is one
    line at once). ValueError naming the problem: a host that does not resolve or is not this
    machine's, a port in use or below 1024 without the privilege. Warns when the address is not
    a loopback one: the stream and the prompt box are then open to the network."""
    try:
        family, kind, proto, _, where = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM,
                                                           flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as err:
        raise ValueError(f"--serve {address}: cannot resolve the host {address.host!r} ({err.strerror})") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart within TIME_WAIT may rebind
        sock.bind(where)
        sock.listen(128)
    except OSError as err:
        sock.close()
        why = {errno.EADDRINUSE: f"port {address.port} is in use (another server listens there): choose another port",
               errno.EACCES: f"port {address.port} needs privileges: choose a port >= 1024",
               errno.EADDRNOTAVAIL: f"{address.host} is not an address of this machine"}.get(err.errno, err.strerror)
        raise ValueError(f"--serve {address}: cannot listen there: {why}") from None
    sock.setblocking(False)
    if not ipaddress.ip_address(sock.getsockname()[0]).is_loopback:
        log.warning("--serve %s: the stream and the prompt box are visible to anyone who can reach this machine "
                    "on the network (no password, no encryption); use 127.0.0.1 (the default) to keep them local",
                    address)
    return sock


def url(sock: socket.socket) -> str:
    """``http://HOST:PORT/`` of a listening socket."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def hex_colour(i: int) -> str:
    """``#rrggbb`` of prompt ``i``'s mask colour (`cris_edge.demo.render.colour`, which is BGR)."""
    b, g, r = colour(i)
    return f"#{r:02x}{g:02x}{b:02x}"


@dataclass(frozen=True)
class Published:
    """An annotated frame for the clients: ``jpeg`` bytes and its `Rendered` record."""

    jpeg: bytes
    rendered: Rendered


class Publisher:
    """The latest annotated frame, handed from the demo's rendering thread (`publish`) to the
    server's handlers (`next_after`) on ``loop``."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self.latest: Optional[Published] = None
        self.closed = False
        self._changed = asyncio.Event()

    def publish(self, rendered: Rendered) -> None:
        """Encode ``rendered`` and make it the latest frame (a `Demo` sink: the rendering thread)."""
        ok, jpeg = cv2.imencode(".jpg", rendered.canvas, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise RuntimeError(f"OpenCV could not encode frame {rendered.frame} as JPEG")
        try:
            self._loop.call_soon_threadsafe(self._set, Published(jpeg.tobytes(), rendered))
        except RuntimeError:  # the loop is closed: the server has stopped and nobody watches
            pass

    def _set(self, item: Published) -> None:
        self.latest = item
        self._changed.set()
        self._changed = asyncio.Event()

    def close(self) -> None:
        """Wake every waiting handler; `next_after` returns None from now on."""
        self.closed = True
        self._changed.set()

    async def next_after(self, frame: int) -> Optional[Published]:
        """The latest frame once its number is above ``frame`` (waiting for it); None once closed."""
        while not self.closed:
            if self.latest is not None and self.latest.rendered.frame > frame:
                return self.latest
            await self._changed.wait()
        return None


class DemoServer:
    """The page's handlers around a `Publisher` and the demo's `Prompts`; ``model``: what the
    status says of the model (`model_info`), ``backend`` and ``source``: strings it shows."""

    def __init__(self, publisher: Publisher, prompts: Prompts, model: dict, backend: str, source: str):
        self.publisher, self.prompts = publisher, prompts
        self.model, self.backend, self.source = model, backend, source

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self.page)
        app.router.add_get("/status", self.status)
        app.router.add_get("/stream.mjpg", self.stream)
        app.router.add_post("/prompts", self.set_prompts)
        return app

    async def page(self, request: web.Request) -> web.Response:
        html = resources.files(__package__).joinpath("web", "index.html").read_bytes()
        return web.Response(body=html, content_type="text/html", charset="utf-8")

    def state(self) -> dict:
        """The status as a dict (see the module)."""
        latest = self.publisher.latest.rendered if self.publisher.latest is not None else None
        return {
            "model": self.model, "backend": self.backend, "source": self.source,
            "prompts": [{"text": t, "colour": hex_colour(i)} for i, t in enumerate(self.prompts.get())],
            "frame": latest.frame if latest else 0,
            "fps": round(latest.fps, 2) if latest and latest.fps is not None else None,
            "timings_ms": {s: round(latest.timings.get(s, 0.0), 2) for s in STAGES} if latest else {},
        }

    async def status(self, request: web.Request) -> web.Response:
        return web.json_response(self.state(), headers={"Cache-Control": "no-store"})

    async def set_prompts(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        texts = body.get("prompts") if isinstance(body, dict) else None
        if not isinstance(texts, list):
            return _bad_request('send JSON {"prompts": ["the red car", ...]}: a list of prompts')
        try:
            self.prompts.set(texts)
        except ValueError as err:
            return _bad_request(str(err))
        return web.json_response(self.state())

    async def stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={
            "Content-Type": f"multipart/x-mixed-replace; boundary={_BOUNDARY}", "Cache-Control": "no-store"})
        await response.prepare(request)
        sent = 0
        while (item := await self.publisher.next_after(sent)) is not None:
            sent = item.rendered.frame
            head = (f"--{_BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(item.jpeg)}\r\n"
                    f"X-Frame: {sent}\r\n\r\n").encode()
            try:
                await response.write(head + item.jpeg + b"\r\n")
            except ConnectionError:  # the viewer went away
                break
        return response


def _bad_request(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400)


def model_info(segmenter) -> dict:
    """What the page says of ``segmenter``'s model: ``name`` (the card's, else the file's),
    ``model`` (`Segmenter.model`), and the card's ``summary`` and ``limits`` (null without one)."""
    card = segmenter.card
    return {"name": card.name if card is not None else segmenter.model, "model": segmenter.model,
            "summary": card.summary if card is not None else None, "limits": card.limits if card is not None else None}


def serve(demo: Demo, sock: socket.socket, model: dict, source: str) -> DemoStats:
    """Run ``demo`` in a worker thread and serve it on ``sock`` (`listen`) until the demo ends
    (its source ended, ``max_frames``): its stats. Ctrl-C stops the demo and the server, then
    raises KeyboardInterrupt; an error of the demo is raised after the same shutdown."""
    return asyncio.run(_serve(demo, sock, model, source))


async def _serve(demo: Demo, sock: socket.socket, model: dict, source: str) -> DemoStats:
    loop = asyncio.get_running_loop()
    publisher = Publisher(loop)
    demo.sink = publisher.publish
    server = DemoServer(publisher, demo.prompts, model, demo.segmenter.backend, source)
    runner = web.AppRunner(server.app(), access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
    await runner.setup()
    finished = asyncio.Event()
    outcome: dict = {}

    def work() -> None:
        try:
            outcome["stats"] = demo.run()
        except BaseException as err:  # raised in the main thread once the server has stopped
            outcome["error"] = err
        finally:
            try:
                loop.call_soon_threadsafe(finished.set)
            except RuntimeError:  # the loop is closed: the server gave up waiting for this thread
                pass

    worker = threading.Thread(target=work, name="cris-demo-serve", daemon=True)
    try:
        await web.SockSite(runner, sock).start()
        log.info("serving on %s (Ctrl-C stops)", url(sock))
        worker.start()
        await finished.wait()
        if "error" not in outcome:
            log.info("the source ended: stopping the server")
    finally:
        demo.stop.set()
        publisher.close()
        if worker.is_alive():
            await asyncio.to_thread(worker.join, 2 * JOIN_TIMEOUT)
        await runner.cleanup()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["stats"]
