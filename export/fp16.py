"""FP16 mixed precision baked into an ONNX graph, keeping overflow-prone ops in FP32.

Why our own pass rather than ModelOpt's autocast or onnxconverter-common: ModelOpt's ONNX path
needs a GPU-oriented stack beside ours (onnxruntime-gpu via its ``[onnx]`` extra, or five extra
packages by hand), and onnxconverter-common's converter writes an invalid graph for ours (it
casts ``Resize``'s ``scales`` input to float16 unless Resize is kept in FP32 whole). What both
do is small, so it is done here, with the same two criteria as ModelOpt's autocast:

* by op type (`FP32_OPS`): LayerNormalization (its variance squares activations: 256^2 already
  nears the FP16 limit), Softmax (exponentials), Where (the attention padding masks, -inf);
* by data (`overflowing_nodes`): any node whose FP32 output reaches `FP16_SAFE_MAX` in absolute
  value on calibration samples, an eighth of FP16's largest finite value, so unseen inputs keep
  headroom.

Everything else computes in FP16, and so do the graph's float inputs and outputs: the runtime
feeds FP16 images (the pre-processing writes them directly) and passes FP16 features between
the graphs. A Cast is inserted wherever an FP32 node meets an FP16 one; TensorRT (strongly
typed, 10.x and 11.x) builds exactly these types.
"""

from __future__ import annotations

import warnings
from typing import Iterable, Mapping

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, version_converter

from cris_edge.runtime.backends.onnxruntime import session

from .checks import tensor_types
from .onnx_passes import tidy

FP32_OPS = frozenset({"LayerNormalization", "Softmax", "Where"})
FP16_MAX = float(np.finfo(np.float16).max)
FP16_SAFE_MAX = FP16_MAX / 8
#: First opset whose QuantizeLinear/DequantizeLinear take float16 inputs and scales.
QDQ_FP16_OPSET = 19
#: Inputs that the ONNX op schemas require to stay float32 (Resize's roi and scales).
_FLOAT32_SLOTS = {"Resize": (1, 2), "Upsample": (1,)}
#: Ops whose output type is set by an attribute; only Cast is rewritten, the others refused.
_TYPED_BY_ATTRIBUTE = frozenset({"ConstantOfShape", "EyeLike", "RandomNormal", "RandomNormalLike",
                                 "RandomUniform", "RandomUniformLike"})


def overflowing_nodes(model: onnx.ModelProto, feeds: Iterable[Mapping[str, np.ndarray]],
                      limit: float = FP16_SAFE_MAX) -> dict[str, float]:
    """``{node name: max |output|}`` for the nodes whose float32 output reaches ``limit`` in
    absolute value on any of ``feeds`` (input dicts), run in FP32 with ONNX Runtime on CPU."""
    types = tensor_types(model)
    float_outputs = [(node.name, out) for node in model.graph.node for out in node.output
                     if types.get(out) == TensorProto.FLOAT]
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    graph_outputs = {o.name for o in probe.graph.output}
    probe.graph.output.extend(helper.make_tensor_value_info(out, TensorProto.FLOAT, None)
                              for _, out in float_outputs if out not in graph_outputs)
    probe_session = session(probe.SerializeToString())
    names = [out for _, out in float_outputs]
    peak = dict.fromkeys(names, 0.0)
    for feed in feeds:
        for name, value in zip(names, probe_session.run(names, dict(feed))):
            if value.size:
                peak[name] = max(peak[name], float(np.nanmax(np.abs(value))))
    found: dict[str, float] = {}
    for node_name, out in float_outputs:
        if peak[out] >= limit:
            found[node_name] = max(found.get(node_name, 0.0), peak[out])
    return found


def convert_to_fp16(model: onnx.ModelProto, keep_fp32: Iterable[str] = ()) -> onnx.ModelProto:
    """A copy of ``model`` computing in FP16 but for the nodes named in ``keep_fp32`` and the ops
    in `FP32_OPS`. Float inputs, outputs and weights become float16 (weights clipped to the FP16
    range, with a warning if any finite one was outside it; infinities stay); Casts join FP32 and FP16 regions.
    A graph with Q/DQ nodes (INT8) gets them in float16 too, its opset raised to `QDQ_FP16_OPSET`:
    INT8 layers then read and write float16 and the rest computes in FP16, as TensorRT runs
    INT8 networks fastest.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node):
        opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
        if opset < QDQ_FP16_OPSET:
            out = version_converter.convert_version(out, QDQ_FP16_OPSET)
    graph = out.graph
    types = tensor_types(out)
    kept = set(keep_fp32) | {n.name for n in graph.node if n.op_type in FP32_OPS}
    refused = sorted({n.op_type for n in graph.node if n.op_type in _TYPED_BY_ATTRIBUTE and n.name not in kept})
    if refused or any(n.op_type in ("If", "Loop", "Scan") for n in graph.node):
        raise ValueError(f"FP16 conversion does not handle {refused or 'subgraphs (If/Loop/Scan)'}")
    is_float = {name for name, t in types.items() if t == TensorProto.FLOAT}
    _rename_fp32_outputs(graph, kept, is_float)
    initializers = {init.name: init for init in graph.initializer}
    half_of: dict[str, str] = {}  # float32 tensor -> its float16 version
    full_of: dict[str, str] = {}  # float16 tensor -> its float32 version
    is_half = {i.name for i in graph.input if i.name in is_float}
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        half = node.name not in kept
        fixed = _FLOAT32_SLOTS.get(node.op_type, ())
        for slot, name in enumerate(node.input):
            if name not in is_float and name not in is_half:
                continue
            want_half = half and slot not in fixed
            if name in initializers and name not in is_half:
                if want_half:
                    if name not in half_of:
                        half_of[name] = _half_initializer(graph, initializers[name])
                    node.input[slot] = half_of[name]
            elif want_half and name not in is_half:
                node.input[slot] = _cast(nodes, half_of, name, TensorProto.FLOAT16, "_fp16")
            elif not want_half and name in is_half:
                node.input[slot] = _cast(nodes, full_of, name, TensorProto.FLOAT, "_fp32")
        if half:
            is_half.update(o for o in node.output if o in is_float)
            if node.op_type == "Cast":
                _retarget_cast(node)
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    for value in (*graph.input, *graph.output):
        if value.type.tensor_type.elem_type == TensorProto.FLOAT:
            value.type.tensor_type.elem_type = TensorProto.FLOAT16
    del graph.value_info[:]
    return tidy(out)


def _retarget_cast(node: onnx.NodeProto) -> None:
    """Make a Cast to float32 inside an FP16 region cast to float16 instead."""
    for attr in node.attribute:
        if attr.name == "to" and attr.i == TensorProto.FLOAT:
            attr.i = TensorProto.FLOAT16


def _rename_fp32_outputs(graph: onnx.GraphProto, kept: set[str], is_float: set[str]) -> None:
    """Give each float graph output produced by a kept (FP32) node an internal name and append a
    Cast to float16 that writes the output name, so every float output is float16."""
    producers = {out: node for node in graph.node for out in node.output}
    for value in graph.output:
        node = producers.get(value.name)
        if node is None or node.name not in kept or value.name not in is_float:
            continue
        inner = f"{value.name}_fp32"
        for other in graph.node:
            other.input[:] = [inner if name == value.name else name for name in other.input]
        node.output[:] = [inner if name == value.name else name for name in node.output]
        graph.node.append(helper.make_node("Cast", [inner], [value.name], to=TensorProto.FLOAT16,
                                           name=f"{value.name}_to_fp16"))
        is_float.add(inner)


def _cast(nodes: list, cache: dict, name: str, to: int, suffix: str) -> str:
    if name not in cache:
        cache[name] = f"{name}{suffix}"
        nodes.append(helper.make_node("Cast", [name], [cache[name]], to=to, name=f"{name}{suffix}_cast"))
    return cache[name]


def _half_initializer(graph: onnx.GraphProto, init: onnx.TensorProto) -> str:
    values = numpy_helper.to_array(init)
    outside = np.isfinite(values) & (np.abs(values) > FP16_MAX)
    if outside.any():
        warnings.warn(f"{int(outside.sum())} value(s) of weight {init.name!r} exceed the FP16 range "
                      "and are clipped to it", RuntimeWarning, 3)
    half = np.where(outside, np.clip(values, -FP16_MAX, FP16_MAX), values).astype(np.float16)
    name = f"{init.name}_fp16"
    graph.initializer.append(numpy_helper.from_array(half, name))
    return name
