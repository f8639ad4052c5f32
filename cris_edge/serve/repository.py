"""The Triton model repository ``cris-serve`` runs: model ``cris`` on Triton's Python backend
(`cris_edge.serve.triton_model`), its ``config.pbtxt`` written from `wire`'s tensors.

    <root>/cris/config.pbtxt     inputs, outputs, dynamic batching, instance group, parameters
    <root>/cris/1/model.py       imports TritonPythonModel from cris_edge (the stub's Python has
                                 the same packages as the server's)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from ..paths import write_atomically
from . import wire

#: The largest batch Triton forms and the largest frame (pixels, 4K UHD) unless configured otherwise.
DEFAULT_MAX_BATCH = 8
MAX_FRAME_PIXELS = 3840 * 2160
MODEL_PY = ("# Triton loads this file; the model is cris-edge's.\n"
            "from cris_edge.serve.triton_model import TritonPythonModel  # noqa: F401\n")


@dataclass(frozen=True)
class ModelSettings:
    """What the ``cris`` model's config says: the bundle, the largest batch Triton forms, the
    queue delay it waits for one (microseconds), instances (one Segmenter each), the frame
    limit, and the Segmenter's backend, device and CPU threads (None: their defaults)."""

    engine: Path
    max_batch: int = DEFAULT_MAX_BATCH
    queue_delay_us: int = 2000
    instances: int = 1
    max_frame_pixels: int = MAX_FRAME_PIXELS
    backend: str = "auto"
    device: Optional[str] = None
    threads: Optional[int] = None


def tensor_block(kind: str, specs: Sequence[wire.TensorSpec]) -> str:
    """``input [...]`` or ``output [...]`` of a config.pbtxt for ``specs``."""
    items = ",\n".join(f'  {{ name: "{t.name}" data_type: TYPE_{t.triton_dtype} dims: [ {", ".join(map(str, t.shape))} ] }}'
                       for t in specs)
    return f"{kind} [\n{items}\n]\n"


def parameters_block(params: dict[str, str]) -> str:
    """``parameters { ... }`` lines of a config.pbtxt for ``params`` (strings, quoted)."""
    def quoted(value: str) -> str:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'

    return "".join(f"parameters {{ key: {quoted(k)} value: {{ string_value: {quoted(v)} }} }}\n"
                   for k, v in params.items())


def model_config(settings: ModelSettings) -> str:
    """The ``config.pbtxt`` of model ``cris`` (text format of Triton's ModelConfig)."""
    params = {"engine": str(Path(settings.engine).resolve()), "max_frame_pixels": str(settings.max_frame_pixels),
              "backend": settings.backend, "device": settings.device or "",
              "threads": "" if settings.threads is None else str(settings.threads)}
    return (f'name: "{wire.MODEL_NAME}"\nbackend: "python"\nmax_batch_size: {settings.max_batch}\n'
            + tensor_block("input", wire.INPUTS) + tensor_block("output", wire.OUTPUTS)
            + f"dynamic_batching {{ max_queue_delay_microseconds: {settings.queue_delay_us} }}\n"
            + f"instance_group [ {{ count: {settings.instances} kind: KIND_CPU }} ]\n" + parameters_block(params))


def write_repository(root: Path, settings: ModelSettings) -> Path:
    """Write the repository under ``root`` (a new or empty directory); returns ``root``."""
    model = Path(root) / wire.MODEL_NAME
    write_atomically(model / "config.pbtxt", model_config(settings))
    write_atomically(model / "1" / "model.py", MODEL_PY)
    return Path(root)
