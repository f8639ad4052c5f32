"""Model ``cris`` of the GPU-server repository (``cris-export --triton-repository``): Triton
Python-backend code that tokenizes, letterboxes and post-processes on the host and runs the
bundle's three graphs as the repository's own models (``cris_text``, ``cris_visual``,
``cris_head``: TensorRT plans or ONNX on Triton's backends) through business-logic scripting
(BLS). Its requests and responses are those of ``cris-serve`` (`wire`), so `Client` talks to both.

The pipeline is the runtime's: `BlsBackend` is the ONNX Runtime backend's graph calls
(`OnnxRuntimeBackend`) with each graph run sent to Triton instead of a session, under
`Segmenter.from_backend` (validation, tokenizer, text cache, batching) and `triton_model.answer`
(requests). Tests run it here with the graph runs given to ONNX Runtime sessions.
"""

from __future__ import annotations

import json
from typing import Callable, Sequence

import numpy as np

from ..runtime.backends.base import ModelInfo
from ..runtime.backends.onnxruntime import OnnxRuntimeBackend
from ..runtime.segmenter import Segmenter
from . import triton_model

#: The repository's model that runs each graph of a ``cris`` bundle.
GRAPH_MODELS = {"text": "cris_text", "visual": "cris_visual", "head": "cris_head"}

#: ``run(graph, feeds, output names)`` -> the outputs, in that order.
GraphRunner = Callable[[str, dict, Sequence[str]], list]


class BlsBackend(OnnxRuntimeBackend):
    """The ONNX Runtime backend's text / visual / head calls, each graph run given to ``run``.

    Args:
        info: the model's input size, text length, normalisation, precision and vocabulary file.
        head_output: the head graph's outputs (``logits`` or ``features``; the plugin head runs
            only inside a TensorRT engine, which its repository model is).
        image_dtype: the visual graph's input dtype (float32 or float16).
        outputs: per graph, its output names in order.
        run: what runs a graph (BLS inside Triton).
        max_batch: the largest batch the graphs' models take.
    """

    def __init__(self, info: ModelInfo, head_output: str, image_dtype: str, outputs: dict[str, list[str]],
                 run: GraphRunner, max_batch: int):
        self.info, self.head_output, self.image_dtype = info, head_output, np.dtype(image_dtype)
        self._outputs, self._runner, self.max_batch = outputs, run, max_batch
        self.name = "triton (BLS to cris_text, cris_visual, cris_head)"

    def _run(self, name: str, feeds: dict) -> list[np.ndarray]:
        return self._runner(name, feeds, self._outputs[name])

    def close(self) -> None:
        """Nothing to release: the graphs belong to Triton."""


def settings_parameters(info: ModelInfo, head_output: str, image_dtype: str, outputs: dict[str, list[str]],
                        threshold: float, max_batch: int, max_frame_pixels: int) -> dict[str, str]:
    """The ``cris`` model config's parameters that `backend_from_parameters` reads back
    (``vocabulary``: a file name in the model's version directory)."""
    return {"input_size": str(info.input_size), "word_len": str(info.word_len), "mean": json.dumps(list(info.mean)),
            "std": json.dumps(list(info.std)), "precision": info.precision, "vocabulary": info.vocabulary or "",
            "head_output": head_output, "image_dtype": image_dtype, "outputs": json.dumps(outputs),
            "threshold": str(threshold), "max_batch": str(max_batch), "max_frame_pixels": str(max_frame_pixels)}


def segmenter_from_parameters(params: dict[str, str], directory: str, run: GraphRunner) -> Segmenter:
    """The Segmenter of model ``cris``: its config's parameters (`settings_parameters`), the
    version directory holding the vocabulary, and the graph runner."""
    info = ModelInfo(int(params["input_size"]), int(params["word_len"]), tuple(json.loads(params["mean"])),
                     tuple(json.loads(params["std"])), params["precision"],
                     f"{directory}/{params['vocabulary']}" if params["vocabulary"] else None)
    backend = BlsBackend(info, params["head_output"], params["image_dtype"], json.loads(params["outputs"]), run,
                         int(params["max_batch"]))
    return Segmenter.from_backend(backend, "Triton BLS", float(params["threshold"]), model="cris (Triton BLS)")


def bls_run(graph: str, feeds: dict, outputs: Sequence[str]) -> list[np.ndarray]:
    """Run ``graph`` as its repository model through BLS (inside Triton's Python backend only)."""
    import triton_python_backend_utils as pb_utils

    request = pb_utils.InferenceRequest(model_name=GRAPH_MODELS[graph], requested_output_names=list(outputs),
                                        inputs=[triton_model.output_tensor(pb_utils, k, v) for k, v in feeds.items()])
    response = request.exec()
    if response.has_error():
        raise RuntimeError(f"{GRAPH_MODELS[graph]}: {response.error().message()}")
    return [np.from_dlpack(response.output_by_name(name)) for name in outputs]


class TritonPythonModel(triton_model.TritonPythonModel):
    """Model ``cris`` over BLS: requests and responses as `triton_model.TritonPythonModel`."""

    def initialize(self, args: dict) -> None:
        params = triton_model.model_parameters(json.loads(args["model_config"]))
        directory = f"{args['model_repository']}/{args['model_version']}"
        self.segmenter = segmenter_from_parameters(params, directory, bls_run)
        self.max_frame_pixels = int(params["max_frame_pixels"])

    def finalize(self) -> None:
        self.segmenter.close()

