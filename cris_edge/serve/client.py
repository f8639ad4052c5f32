"""`Client`: a ``cris-serve`` (Triton) server used like a `Segmenter`.

    from cris_edge.serve import Client
    client = Client("grpc://gpu-server:8001")            # or http://gpu-server:8000
    result = client.run(frame_bgr, "the red car")       # the same SegmentationResult as Segmenter.run
    left, right = client.run(frame_bgr, ["the left dog", "the right dog"])

A Client holds one connection (tritonclient's HTTP or gRPC client, chosen by the URL's scheme) and
is meant for one thread: give each thread its own. ``retries`` retries a request whose server is
unreachable (restarting, not yet up) after ``retry_wait`` seconds, doubling the wait each time; a
request the server refuses (a bad frame or prompt) is never retried.
"""

from __future__ import annotations

import time
from typing import Optional, Sequence, Union
from urllib.parse import urlsplit

import numpy as np

from ..runtime.inputs import check_frame, check_texts
from ..runtime.result import SegmentationResult
from . import wire

#: Ports of the URL schemes when the URL names none (Triton's defaults).
DEFAULT_PORTS = {"http": 8000, "grpc": 8001}


class ServerUnavailableError(ConnectionError):
    """The server could not be reached (after the retries)."""


def _module(scheme: str):
    if scheme == "http":
        import tritonclient.http as module
    else:
        import tritonclient.grpc as module
    return module


class Client:
    """A ``cris`` model on a Triton server.

    Args:
        url: ``http://HOST[:PORT]`` (default port 8000) or ``grpc://HOST[:PORT]`` (8001).
        timeout: seconds a request may take (network and inference), default 60.
        retries: attempts after the first when the server is unreachable (default 0).
        retry_wait: seconds before the first retry (doubled each time).

    Raises ValueError for a URL of another form; `run` raises ValueError naming the problem for a
    request the server (or this client, before sending) refuses, ServerUnavailableError when the
    server cannot be reached, RuntimeError for another server error.
    """

    def __init__(self, url: str, *, timeout: float = 60.0, retries: int = 0, retry_wait: float = 0.5):
        parts = urlsplit(url)
        if parts.scheme not in DEFAULT_PORTS or not parts.hostname or parts.path not in ("", "/"):
            raise ValueError(f"server URL must be http://HOST[:PORT] or grpc://HOST[:PORT], got {url!r}")
        if retries < 0 or retry_wait < 0 or timeout <= 0:
            raise ValueError(f"retries and retry_wait must be >= 0 and timeout > 0, got {retries}, {retry_wait}, "
                             f"{timeout}")
        self.url, self.scheme = url, parts.scheme
        self.timeout, self.retries, self.retry_wait = timeout, retries, retry_wait
        self._triton = _module(self.scheme)
        self._address = f"{parts.hostname}:{parts.port or DEFAULT_PORTS[self.scheme]}"
        self._client = self._connect()
        #: Requests Triton batched into the call that served the last `run` (1: not batched).
        self.last_batch = 0

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    def run(self, frame: np.ndarray, text: Union[str, Sequence[str]], *, color: str = "bgr"
            ) -> Union[SegmentationResult, list[SegmentationResult]]:
        """Segment what ``text`` names in ``frame`` on the server: the arguments and results of
        `Segmenter.run` (``prob`` is not sent: always None; ``timings`` are the server's)."""
        texts, single = check_texts(text)
        wire.check_no_nul(texts)
        checked = check_frame(frame, color)
        image = checked.image if checked.bgr else checked.image[..., ::-1]
        inputs = [self._input(wire.FRAME, np.ascontiguousarray(image)[None]),
                  self._input(wire.TEXT, wire.encode_texts(texts)[None])]
        response = self._infer(inputs)
        masks, scores = response.as_numpy(wire.MASK.name)[0], response.as_numpy(wire.SCORE.name)[0]
        ms = response.as_numpy(wire.MS.name)[0]
        self.last_batch = int(response.as_numpy(wire.BATCH.name)[0, 0])
        timings = {k: float(v) for k, v in zip(wire.MS_KEYS, ms)}
        results = [SegmentationResult(t, masks[i], None, dict(timings), float(scores[i])) for i, t in enumerate(texts)]
        return results[0] if single else results

    def _connect(self):
        if self.scheme == "http":
            return self._triton.InferenceServerClient(self._address, connection_timeout=self.timeout,
                                                      network_timeout=self.timeout)
        return self._triton.InferenceServerClient(self._address)

    def ready(self) -> Optional[bool]:
        """Whether the ``cris`` model is ready on the server (False: the server answers and the
        model is not ready; None: no server answers)."""
        try:
            return bool(self._client.is_model_ready(wire.MODEL_NAME))
        except Exception:  # noqa: BLE001 - any failure to ask means no server answers
            return None

    def _input(self, spec: wire.TensorSpec, array: np.ndarray):
        tensor = self._triton.InferInput(spec.name, list(array.shape), spec.triton_dtype)
        tensor.set_data_from_numpy(array)
        return tensor

    def _infer(self, inputs):
        from tritonclient.utils import InferenceServerException

        outputs = [self._triton.InferRequestedOutput(t.name) for t in wire.OUTPUTS]
        wait = self.retry_wait
        for attempt in range(self.retries + 1):
            try:
                if self.scheme == "http":
                    return self._client.infer(wire.MODEL_NAME, inputs, outputs=outputs)
                return self._client.infer(wire.MODEL_NAME, inputs, outputs=outputs, client_timeout=self.timeout)
            except InferenceServerException as err:
                message = err.message() or str(err)
                if wire.REFUSED in message:
                    raise ValueError(_refusal(message)) from None
                if not _unreachable(err):
                    raise RuntimeError(f"{self.url}: the server failed the request: {_last_line(message)}") from None
                problem = _last_line(message)
            except OSError as err:  # the HTTP client's connection errors
                problem = str(err) or type(err).__name__
            if attempt < self.retries:
                time.sleep(wait)
                wait *= 2
                if self.scheme == "http":  # a fresh connection: the old one died with the server
                    self._client.close()
                    self._client = self._connect()
        raise ServerUnavailableError(f"{self.url}: server unreachable after {self.retries + 1} attempt(s): {problem}")

    def close(self) -> None:
        """Close the connection."""
        self._client.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _last_line(message: str) -> str:
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    return lines[-1] if lines else message


def _refusal(message: str) -> str:
    """The problem the server named, from its error message (which may carry a traceback)."""
    tail = message[message.rindex(wire.REFUSED) + len(wire.REFUSED):]
    return tail.split("\n")[0].strip().rstrip("\\n").strip()


def _unreachable(err) -> bool:
    """Whether a tritonclient error says the server is not there (gRPC UNAVAILABLE, or the model
    not loaded yet while it restarts)."""
    status = str(err.status() or "")
    message = err.message() or ""
    return status in ("StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED") or "unknown model" in message \
        or "is not ready" in message or "not healthy" in message

