"""Checks on exported graphs: the deployment rules of docs/design.md, TensorRT's ONNX parser coverage, and
the op census.

`tensorrt_problems` compares a graph with ``tensorrt_onnx_ops.json`` (beside this file): the
operator support matrix of TensorRT's ONNX parser, kept as data with the TensorRT version it
comes from. `rule_problems` checks the deployment rules. `check_graph` raises on either.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import onnx
from onnx import numpy_helper

from .onnx_passes import BATCH, constant_nodes

TENSORRT_OPS_FILE = Path(__file__).with_name("tensorrt_onnx_ops.json")
MIN_OPSET = 17
#: Ops a graph must not hold: the tokenizer supplies eot_index and pad_mask instead.
FORBIDDEN_OPS = ("ArgMax", "ArgMin", "Equal")
#: ONNX element types as the TensorRT matrix names them.
_TYPE_NAMES = {
    onnx.TensorProto.FLOAT: "FP32", onnx.TensorProto.FLOAT16: "FP16", onnx.TensorProto.BFLOAT16: "BF16",
    onnx.TensorProto.INT32: "INT32", onnx.TensorProto.INT64: "INT64", onnx.TensorProto.INT8: "INT8",
    onnx.TensorProto.UINT8: "UINT8", onnx.TensorProto.BOOL: "BOOL", onnx.TensorProto.DOUBLE: "DOUBLE",
}


class GraphCheckError(ValueError):
    """A graph breaks a deployment rule or uses what TensorRT's ONNX parser cannot take."""


@dataclass(frozen=True)
class TensorRTOps:
    """TensorRT's ONNX operator support: ``ops`` maps op type -> types of its data input."""

    tensorrt_version: str
    source: str
    opset_min: int
    opset_max: int
    ops: Mapping[str, tuple[str, ...]]
    attributes: Mapping[str, Mapping]


@lru_cache(maxsize=1)
def tensorrt_ops(path: Path = TENSORRT_OPS_FILE) -> TensorRTOps:
    """The support list from ``path`` (default: the one shipped beside this module)."""
    data = json.loads(Path(path).read_text())
    return TensorRTOps(data["tensorrt_version"], data["source"], data["opset_min"], data["opset_max"],
                       {k: tuple(v) for k, v in data["ops"].items()}, data["attributes"])


def op_census(model: onnx.ModelProto) -> dict[str, int]:
    """``{op_type: count}`` of the graph's nodes, most frequent first (``domain::op`` outside the
    default ONNX domain)."""
    names = (n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}::{n.op_type}" for n in model.graph.node)
    return dict(Counter(names).most_common())


def _opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    """``{tensor name: ONNX element type}`` for every typed tensor, after shape inference."""
    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    types = {init.name: init.data_type for init in graph.initializer}
    for info in (*graph.input, *graph.value_info, *graph.output):
        if info.type.HasField("tensor_type"):
            types[info.name] = info.type.tensor_type.elem_type
    return types


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            value = onnx.helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


def _initializer_values(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}


def tensorrt_problems(model: onnx.ModelProto, table: TensorRTOps | None = None,
                      plugin_ops: Iterable[str] = ()) -> list[str]:
    """Everything in ``model`` outside TensorRT's ONNX parser support: ops not in the list, data
    input types it does not take, attribute values it rejects, an opset outside its range.
    ``plugin_ops`` (``domain::op``) are served by a loaded plugin library and accepted."""
    table = table or tensorrt_ops()
    problems = []
    opset = _opset(model)
    if not table.opset_min <= opset <= table.opset_max:
        problems.append(f"opset {opset} outside TensorRT {table.tensorrt_version}'s "
                        f"{table.opset_min}..{table.opset_max}")
    types = tensor_types(model)
    values = _initializer_values(model)
    plugins = set(plugin_ops)
    for node in model.graph.node:
        where = f"{node.op_type} node {node.name!r}"
        if node.domain not in ("", "ai.onnx"):
            if f"{node.domain}::{node.op_type}" not in plugins:
                problems.append(f"{where}: custom domain {node.domain!r} without a plugin")
            continue
        if node.op_type not in table.ops:
            problems.append(f"{where}: op not supported by TensorRT {table.tensorrt_version}'s ONNX parser")
            continue
        allowed = table.ops[node.op_type]
        data_type = types.get(node.input[0]) if node.input else None
        if allowed and data_type is not None and _TYPE_NAMES.get(data_type, str(data_type)) not in allowed:
            problems.append(f"{where}: input type {_TYPE_NAMES.get(data_type, data_type)} not in {list(allowed)}")
        problems += [f"{where}: {p}" for p in _attribute_problems(node, table.attributes.get(node.op_type, {}), values)]
    return problems


def _attribute_problems(node: onnx.NodeProto, limits: Mapping, values: Mapping[str, np.ndarray]) -> list[str]:
    problems = []
    if "mode" in limits and _attr(node, "mode", "nearest") not in limits["mode"]:
        problems.append(f"mode {_attr(node, 'mode', 'nearest')!r} not in {limits['mode']}")
    ctm = limits.get("coordinate_transformation_mode")
    if ctm and _attr(node, "coordinate_transformation_mode", "half_pixel") not in ctm:
        problems.append(f"coordinate_transformation_mode {_attr(node, 'coordinate_transformation_mode', '')!r} not in {ctm}")
    if limits.get("dilations_all_ones") and any(d != 1 for d in _attr(node, "dilations", [])):
        problems.append("dilations other than 1")
    if limits.get("zero_point_zero") and len(node.input) > 2 and node.input[2]:
        zero_point = values.get(node.input[2])
        if zero_point is None or np.any(zero_point != 0):
            problems.append("zero point not a constant 0")
    return problems


def rule_problems(model: onnx.ModelProto, dynamic_outputs: bool = True, single_inputs: Iterable[str] = ()
                  ) -> list[str]:
    """Breaches of the deployment rules (docs/design.md): opset >= 17; Conv weights
    constant (an initializer, or a DequantizeLinear of one); no ArgMax/ArgMin/Equal; every input
    and output ``[batch, static...]`` (the inputs named in ``single_inputs``: ``[1, static...]``,
    `cris_edge.bundle.SINGLE_INPUTS`); no subgraph left that depends on constants only."""
    problems = []
    if _opset(model) < MIN_OPSET:
        problems.append(f"opset {_opset(model)} < {MIN_OPSET}")
    inits = {init.name for init in model.graph.initializer}
    dequantized = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits}
    for node in model.graph.node:
        if node.op_type in FORBIDDEN_OPS:
            problems.append(f"{node.op_type} node {node.name!r}: forbidden (the tokenizer supplies it)")
        if node.op_type in ("Conv", "ConvTranspose") and node.input[1] not in inits | dequantized:
            problems.append(f"Conv node {node.name!r}: weight {node.input[1]!r} is not constant")
    single = set(single_inputs)
    for info in (*model.graph.input, *(model.graph.output if dynamic_outputs else ())):
        dims = info.type.tensor_type.shape.dim
        first_ok = dims and (dims[0].dim_value == 1 if info.name in single else dims[0].dim_param == BATCH)
        if not first_ok or any(not d.HasField("dim_value") for d in dims[1:]):
            shape = [d.dim_param or d.dim_value for d in dims]
            problems.append(f"{info.name}: shape {shape} is not [{1 if info.name in single else BATCH}, static...]")
    folded = [n.name or n.op_type for n in constant_nodes(model, stop_at=("DequantizeLinear",))]
    if folded:
        problems.append(f"constant subgraph not baked: {folded[:8]}")
    return problems


def check_graph(model: onnx.ModelProto, name: str, plugin_ops: Iterable[str] = (),
                single_inputs: Iterable[str] = (), tensorrt: bool = True) -> None:
    """Raise GraphCheckError listing every rule breach and (``tensorrt``: for a graph meant for
    TensorRT) TensorRT parser problem of ``model``."""
    problems = rule_problems(model, single_inputs=single_inputs)
    if tensorrt:
        problems += tensorrt_problems(model, plugin_ops=plugin_ops)
    if problems:
        raise GraphCheckError(f"graph {name!r} fails {len(problems)} check(s):\n  " + "\n  ".join(problems))
