"""One TensorRT engine ready to run: its execution context and a device buffer per I/O tensor,
sized for the optimisation profile's largest batch (TensorRT 10.3 - 11.x Python API)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np

from ...bundle import BundleError
from .cuda import DeviceBuffer, Stream

if TYPE_CHECKING:  # the runtime import happens in the backend, after a GPU is found
    import tensorrt


@dataclass(frozen=True)
class EngineTensor:
    """An engine I/O tensor: numpy dtype and shape of one batch item (``item``)."""

    name: str
    dtype: np.dtype
    item: tuple[int, ...]

    @property
    def item_bytes(self) -> int:
        return int(np.prod(self.item, dtype=np.int64)) * self.dtype.itemsize


class TrtEngine:
    """``path`` deserialized by ``runtime``; ``inputs`` / ``outputs`` in the bundle's order.

    Every tensor is bound to its own buffer (``buffers[name].ptr``); `bind` points an input at
    other device memory instead (e.g. the visual engine's outputs). `set_batch` sets the batch of
    every input whose first dimension is dynamic; `enqueue` runs the engine on a stream.
    """

    def __init__(self, trt: ModuleType, runtime: tensorrt.Runtime, path: Path, inputs: Sequence[str],
                 outputs: Sequence[str]):
        engine: Optional[tensorrt.ICudaEngine] = runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise BundleError(f"TensorRT could not deserialize {path} (see its log above): rebuild the engines on this "
                              f"machine with `cris-export --engine-only {path.parent}`")
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        if sorted(names) != sorted([*inputs, *outputs]):
            raise BundleError(f"{path} has tensors {names}, config.json says {[*inputs, *outputs]}: rebuild it with "
                              f"`cris-export --engine-only {path.parent}`")
        self.engine: tensorrt.ICudaEngine = engine
        self.context: tensorrt.IExecutionContext = engine.create_execution_context()
        if self.context is None:
            raise RuntimeError(f"TensorRT could not create an execution context for {path} (out of GPU memory?)")
        # inputs of a fixed batch (the zero-shot global graph's image) are left out of the batch
        self._batched = [name for name in inputs if int(engine.get_tensor_shape(name)[0]) < 0]
        self.max_batch = min(int(engine.get_tensor_profile_shape(name, 0)[2][0]) for name in self._batched or inputs)
        for name in inputs:  # at the largest batch, so every output's largest shape is known
            shape: tuple[int, ...] = tuple(engine.get_tensor_profile_shape(name, 0)[2])  # type: ignore[arg-type]
            if not self.context.set_input_shape(name, shape):
                raise RuntimeError(f"TensorRT refused input shape {shape} for {name!r} of {path}")
        self.inputs = [self._spec(trt, name) for name in inputs]
        self.outputs = [self._spec(trt, name) for name in outputs]
        self.buffers = {s.name: DeviceBuffer(self.max_batch * s.item_bytes) for s in (*self.inputs, *self.outputs)}
        for name, buffer in self.buffers.items():
            self.bind(name, buffer.ptr)
        self._batch = self.max_batch

    def _spec(self, trt: ModuleType, name: str) -> EngineTensor:
        # Dims iterates through __getitem__; the 10.13 stubs declare no __iter__
        shape: tuple[int, ...] = tuple(self.context.get_tensor_shape(name))  # type: ignore[arg-type]
        if len(shape) == 0 or any(d < 0 for d in shape[1:]):
            raise BundleError(f"engine tensor {name!r} has shape {shape}: only the batch may be dynamic")
        return EngineTensor(name, np.dtype(trt.nptype(self.engine.get_tensor_dtype(name))), shape[1:])

    def spec(self, name: str) -> EngineTensor:
        """The `EngineTensor` of tensor ``name``."""
        return next(s for s in (*self.inputs, *self.outputs) if s.name == name)

    def bind(self, name: str, ptr: int) -> None:
        """Read (input) or write (output) tensor ``name`` at device address ``ptr``."""
        if not self.context.set_tensor_address(name, int(ptr)):
            raise RuntimeError(f"TensorRT refused the address of tensor {name!r}")

    def set_batch(self, batch: int) -> None:
        """Run the next `enqueue` on ``batch`` (1 .. ``max_batch``) items."""
        if not 1 <= batch <= self.max_batch:
            raise ValueError(f"batch {batch} outside the engine's profile 1..{self.max_batch}")
        if batch == self._batch:
            return
        for spec in self.inputs:
            if spec.name in self._batched and not self.context.set_input_shape(spec.name, (batch, *spec.item)):
                raise RuntimeError(f"TensorRT refused batch {batch} for input {spec.name!r}")
        self._batch = batch

    def enqueue(self, stream: Stream) -> None:
        """Enqueue the engine on ``stream`` (``execute_async_v3``)."""
        if not self.context.execute_async_v3(stream.handle):
            raise RuntimeError("TensorRT execute_async_v3 failed (see its log above)")
