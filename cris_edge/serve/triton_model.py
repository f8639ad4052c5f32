"""The ``cris`` model as Triton Python-backend code: `TritonPythonModel` runs inside Triton's
Python-backend stub (one stub process, one `Segmenter`, per model instance); `answer` is its
logic on plain arrays, testable without Triton.

Tensors cross the stub through DLPack, never through ``Tensor.as_numpy`` / ``Tensor(name,
array)``: the stub shipped with ``nvidia-pytriton`` 0.7.0 builds NumPy arrays with a NumPy 1
binary interface that misreads arrays under NumPy 2 (every element read as the first: the prompt
"a dog" arrived as "aaaaa"), while DLPack hands over the memory as it is.
"""

from __future__ import annotations

import ctypes
import json
import logging
from typing import Optional, Union

import numpy as np

from ..runtime.segmenter import Segmenter
from . import wire

log = logging.getLogger("cris_edge.serve")

#: The name NumPy's DLPack capsule deleter takes for "a consumer took the tensor" (the stub marks
#: the capsules it takes "used_dlpack", and NumPy 2's deleter then reports an error on each).
_USED_CAPSULE = b"used_dltensor"


def output_tensor(pb_utils, name: str, value: np.ndarray):
    """A Triton tensor (an output, or a BLS request's input) holding ``value``, through DLPack
    (see the module docstring)."""
    capsule = np.ascontiguousarray(value).__dlpack__()
    tensor = pb_utils.Tensor.from_dlpack(name, capsule)
    set_name = ctypes.pythonapi.PyCapsule_SetName
    set_name.argtypes = [ctypes.py_object, ctypes.c_char_p]
    set_name(capsule, _USED_CAPSULE)
    return tensor


def check_request(frame: np.ndarray, text: np.ndarray, max_frame_pixels: int) -> list[tuple[np.ndarray, list[str]]]:
    """One request's ``frame`` (uint8 ``[B, H, W, 3]``) and ``text`` (uint8 ``[B, N]``) -> ``B``
    pairs (frame ``[H, W, 3]``, prompts). ValueError naming the problem: a frame over
    ``max_frame_pixels`` pixels or empty, an undecodable or empty prompt, rows with different
    numbers of prompts (their masks share one output tensor). Triton itself refuses a wrong
    dtype or rank before the model sees the request."""
    if frame.dtype != np.uint8 or frame.ndim != 4 or frame.shape[-1] != 3 or 0 in frame.shape:
        raise ValueError(f"frame must be a non-empty uint8 [H, W, 3] BGR image, got {frame.dtype} "
                         f"{list(frame.shape[1:])}")
    height, width = frame.shape[1:3]
    if height * width > max_frame_pixels:
        raise ValueError(f"frame of {width}x{height} = {height * width} pixels exceeds this server's limit of "
                         f"{max_frame_pixels} pixels: send a smaller frame")
    if text.ndim != 2 or text.shape[0] != frame.shape[0]:
        raise ValueError(f"text must be one uint8 [N] tensor per frame, got {list(text.shape)} for "
                         f"{frame.shape[0]} frames")
    rows = [(frame[i], wire.decode_texts(text[i])) for i in range(frame.shape[0])]
    if len({len(prompts) for _, prompts in rows}) > 1:
        raise ValueError("every frame of one request needs the same number of prompts")
    return rows


def answer(segmenter: Segmenter, requests: list[dict[str, np.ndarray]], max_frame_pixels: int
           ) -> list[Union[dict[str, np.ndarray], ValueError]]:
    """The responses to the requests Triton batched into one call: per request, its outputs
    (`wire.OUTPUTS`) or the ValueError that refuses it (the others are served). The frames of all
    good requests run through ``segmenter`` together (`Segmenter.run_many`)."""
    checked: list[Union[list, ValueError]] = []
    for request in requests:
        try:
            checked.append(check_request(request[wire.FRAME.name], request[wire.TEXT.name], max_frame_pixels))
        except ValueError as err:
            checked.append(err)
    rows = [row for request in checked if not isinstance(request, ValueError) for row in request]
    results = segmenter.run_many([f for f, _ in rows], [p for _, p in rows], warn_truncated=False) if rows else []
    responses: list[Union[dict[str, np.ndarray], ValueError]] = []
    first = 0
    for request in checked:
        if isinstance(request, ValueError):
            responses.append(request)
            continue
        mine, first = results[first:first + len(request)], first + len(request)
        timings = mine[0][0].timings
        responses.append({
            wire.MASK.name: np.stack([np.stack([r.mask for r in group]) for group in mine]),
            wire.SCORE.name: np.array([[r.score for r in group] for group in mine], np.float32),
            wire.MS.name: np.array([[timings.get(k, 0.0) for k in wire.MS_KEYS]] * len(mine), np.float32),
            wire.BATCH.name: np.full((len(mine), 1), len(requests), np.int32)})
    return responses


def model_parameters(model_config: dict) -> dict[str, str]:
    """The ``parameters`` of a Triton model config (as the Python backend passes it, JSON-decoded)
    as plain strings."""
    return {k: v["string_value"] for k, v in model_config.get("parameters", {}).items()}


class TritonPythonModel:
    """Triton's entry points (``initialize``, ``execute``, ``finalize``). The model config's
    parameters name the bundle (``engine``), the backend, device, CPU threads and the frame
    limit (``max_frame_pixels``); `cris_edge.serve.repository` writes them."""

    def initialize(self, args: dict) -> None:
        params = model_parameters(json.loads(args["model_config"]))
        threads: Optional[int] = int(params["threads"]) if params.get("threads") else None
        self.segmenter = Segmenter(params["engine"], params.get("backend") or "auto", params.get("device") or None,
                                   threads=threads)
        self.max_frame_pixels = int(params["max_frame_pixels"])
        log.info("instance %s: %r", args.get("model_instance_name"), self.segmenter)

    def execute(self, requests):
        import triton_python_backend_utils as pb_utils

        arrays = [{spec.name: np.from_dlpack(pb_utils.get_input_tensor_by_name(request, spec.name))
                   for spec in wire.INPUTS} for request in requests]
        responses = []
        for outcome in answer(self.segmenter, arrays, self.max_frame_pixels):
            if isinstance(outcome, ValueError):
                error = pb_utils.TritonError(f"{wire.REFUSED}{outcome}", pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
            else:
                responses.append(pb_utils.InferenceResponse(
                    [output_tensor(pb_utils, name, value) for name, value in outcome.items()]))
        return responses

    def finalize(self) -> None:
        self.segmenter.close()
