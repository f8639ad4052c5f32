"""Graph passes on exported ONNX models: bake constant subgraphs, drop what nothing uses.

Every shape-only constant (positional encodings, coordinate maps, the attention pool's resized
positions, split weights) reaches the exported graph either as an initializer or as a subgraph
computed from initializers only; `fold_constants` evaluates those subgraphs once, with ONNX
Runtime, and stores their results as initializers, so nothing but the batch is computed at
run time.
"""

from __future__ import annotations

import onnx
from onnx import numpy_helper

from cris_edge.runtime.backends.onnxruntime import session

#: Name of the dynamic batch dimension of every graph input and output.
BATCH = "batch"


def constant_nodes(model: onnx.ModelProto, stop_at: tuple[str, ...] = ()) -> list[onnx.NodeProto]:
    """Nodes whose inputs are all initializers or outputs of such nodes (``Constant`` nodes
    included), in graph order: the subgraph that depends on no graph input. Nodes of the op
    types in ``stop_at`` are never counted (``DequantizeLinear``: INT8 weights are meant to be
    dequantized at run time)."""
    known = {init.name for init in model.graph.initializer} | {""}
    found = []
    for node in model.graph.node:
        if node.op_type not in stop_at and all(name in known for name in node.input):
            found.append(node)
            known.update(node.output)
    return found


def fold_constants(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` with every `constant_nodes` subgraph replaced by initializers.

    The subgraph is run once with ONNX Runtime on CPU (all graph optimisations off, so the
    values are the ops' own results).
    """
    folded = [n for n in constant_nodes(model) if n.domain in ("", "ai.onnx")]
    if not folded:
        return model
    produced = {out for n in folded for out in n.output}
    kept = [n for n in model.graph.node if not any(out in produced for out in n.output)]
    needed = {name for n in kept for name in n.input} | {out.name for out in model.graph.output}
    outputs = [name for n in folded for name in n.output if name in needed]  # graph order: deterministic bytes
    read = {name for n in folded for name in n.input}
    sub = onnx.helper.make_model(
        onnx.helper.make_graph(folded, "constants", [], [onnx.ValueInfoProto(name=n) for n in outputs],
                               [init for init in model.graph.initializer if init.name in read]),
        opset_imports=model.opset_import, ir_version=model.ir_version)
    values = session(sub.SerializeToString(), optimize=False).run(outputs, {})
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    out.graph.node.extend(kept)
    out.graph.initializer.extend(numpy_helper.from_array(v, n) for n, v in zip(outputs, values))
    return out


def tidy(model: onnx.ModelProto) -> onnx.ModelProto:
    """Drop initializers nothing reads and ``value_info`` of tensors no node produces (in place;
    returns ``model``)."""
    graph = model.graph
    used = {name for n in graph.node for name in n.input} | {o.name for o in graph.output}
    keep = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    produced = {out for n in graph.node for out in n.output}
    info = [vi for vi in graph.value_info if vi.name in produced]
    del graph.value_info[:]
    graph.value_info.extend(info)
    return model
