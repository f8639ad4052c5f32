"""What the exporter records in a bundle about its graphs (their inputs and outputs) and itself
(time, versions). The bundle's schema is `cris_edge.bundle`."""

from __future__ import annotations

import datetime as _dt
import json
from importlib import metadata
from pathlib import Path
from typing import Optional

import onnx

from cris_edge.bundle import Graph, ModelCard, TensorSpec

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


def model_card(checkpoint) -> Optional[ModelCard]:
    """The `ModelCard` of ``checkpoint`` from the card JSON beside it (``<checkpoint stem>.json``,
    as the demo model has), or None where there is none.

    Keys read: ``name`` (else the checkpoint's stem), ``summary`` and ``limits`` (one line each,
    else empty), ``dataset`` (else ``held_out.dataset``) and ``metrics`` (else the numbers of
    ``held_out`` that are scores: its floats). Other keys are the card's own. ValueError naming
    the file when it is not a JSON object of those types."""
    path = Path(checkpoint).with_suffix(".json")
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read the model card {path}: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"the model card {path} must be a JSON object")
    held_out = data.get("held_out") if isinstance(data.get("held_out"), dict) else {}
    fields = {"name": data.get("name", Path(checkpoint).stem), "summary": data.get("summary", ""),
              "limits": data.get("limits", ""), "dataset": data.get("dataset", held_out.get("dataset"))}
    for key, value in fields.items():
        if not (isinstance(value, str) or (key == "dataset" and value is None)):
            raise ValueError(f"the model card {path}: {key} must be a string, got {value!r}")
        if isinstance(value, str) and "\n" in value.strip():
            raise ValueError(f"the model card {path}: {key} must be one line")
    metrics = data.get("metrics", {k: v for k, v in held_out.items() if isinstance(v, float)})
    if not isinstance(metrics, dict) or any(isinstance(v, bool) or not isinstance(v, (int, float))
                                            for v in metrics.values()):
        raise ValueError(f"the model card {path}: metrics must be an object of numbers")
    return ModelCard(**{k: v.strip() if isinstance(v, str) else v for k, v in fields.items()},
                     metrics={str(k): float(v) for k, v in metrics.items()})


def utc_now() -> str:
    """The current UTC time, ISO-8601 to the second."""
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def versions() -> dict[str, object]:
    """Versions of cris_edge and the tools an export uses, and the export opset."""
    import onnxruntime as ort
    import torch

    return {"cris_edge": metadata.version("cris-edge"), "torch": torch.__version__.split("+")[0],
            "onnx": onnx.__version__, "onnxruntime": ort.__version__, "opset": OPSET}
