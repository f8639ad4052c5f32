"""What the exporter records in a bundle about its graphs (their inputs and outputs) and itself
(time, versions). The bundle's schema is `cris_edge.bundle`."""

from __future__ import annotations

import datetime as _dt
from importlib import metadata

import onnx

from cris_edge.bundle import Graph, TensorSpec

from .graphs import OPSET


def graph_entry(model: onnx.ModelProto, file: str, precision: str) -> Graph:
    """The bundle's `Graph` record of ``model`` saved as ``file``: its opset and every input and
    output's name, numpy dtype name and shape (the dynamic dimension by its name, ``"batch"``)."""
    def describe(value: onnx.ValueInfoProto) -> TensorSpec:
        tensor = value.type.tensor_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)
        return TensorSpec(value.name, dtype.name, tuple(d.dim_param or d.dim_value for d in tensor.shape.dim))

    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    return Graph(file, precision, opset, tuple(describe(v) for v in model.graph.input),
                 tuple(describe(v) for v in model.graph.output), None)


def utc_now() -> str:
    """The current UTC time, ISO-8601 to the second."""
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def versions() -> dict[str, object]:
    """Versions of cris_edge and the tools an export uses, and the export opset."""
    import onnxruntime as ort
    import torch

    return {"cris_edge": metadata.version("cris-edge"), "torch": torch.__version__.split("+")[0],
            "onnx": onnx.__version__, "onnxruntime": ort.__version__, "opset": OPSET}
