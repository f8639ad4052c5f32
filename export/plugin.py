"""The ``SimUpsample`` plugin node: the fused similarity + sigmoid + bicubic upsampling inside the
head engine (TensorRT IPluginV3 in ``cpp/plugin``, contract in ``sim_upsample_plugin.h``).

ONNX node ``cris_edge::SimUpsample`` (TensorRT's ONNX parser hands a node it has no importer for
to the plugin registry by op type, with the ``plugin_namespace`` and ``plugin_version``
attributes picking the creator; the other attributes become plugin fields)::

    inputs   z_v [B, C, h, w], weight [B, C, 3, 3], bias [B]    (one dtype: float32 or float16)
    output   prob [B, 1, out_height, out_width]                  (the inputs' dtype)
    attrs    out_height, out_width (the network input size S), plugin_namespace "cris_edge",
             plugin_version "1"

The engine needs ``libcris_edge_trt_plugin.so`` (``cmake -S cpp -B build && cmake --build
build``) loaded at build and at run time. ONNX Runtime has no such op: a plugin bundle runs
only as TensorRT engines.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

from cris_edge import paths

if TYPE_CHECKING:
    import onnx

DOMAIN = "cris_edge"
OP = "SimUpsample"
QUALIFIED_OP = f"{DOMAIN}::{OP}"
LIBRARY = paths.TRT_PLUGIN_LIBRARY
PLUGIN_ENV = paths.TRT_PLUGIN_ENV


def attach_sim_upsample(graph: onnx.ModelProto, input_size: int) -> onnx.ModelProto:
    """A copy of a head graph with outputs ``(z_v, weight, bias)`` whose single output is
    ``prob [batch, 1, S, S]``, computed by a SimUpsample node from those three tensors."""
    import onnx  # here, not at import: building engines of a bundle (--engine-only) needs no onnx
    from onnx import helper

    names = [o.name for o in graph.graph.output]
    if names != ["z_v", "weight", "bias"]:
        raise ValueError(f"SimUpsample needs a head graph with outputs z_v, weight, bias; this one has {names}")
    out = onnx.ModelProto()
    out.CopyFrom(graph)
    dtype = graph.graph.output[0].type.tensor_type.elem_type
    out.graph.node.append(helper.make_node(
        OP, names, ["prob"], name="sim_upsample", domain=DOMAIN, out_height=input_size, out_width=input_size,
        plugin_namespace=DOMAIN, plugin_version="1"))
    del out.graph.output[:]
    out.graph.output.append(helper.make_tensor_value_info("prob", dtype, ["batch", 1, input_size, input_size]))
    out.opset_import.append(helper.make_opsetid(DOMAIN, 1))
    return out


def find_library(explicit: Optional[Path] = None) -> Path:
    """The plugin library: ``explicit``, else ``$CRIS_EDGE_TRT_PLUGIN``, else ``build/`` of this
    checkout (`cris_edge.paths.find_library`). FileNotFoundError says how to build it."""
    return paths.find_library(LIBRARY, PLUGIN_ENV, explicit=explicit,
                              how="build it on this device with `cmake -S cpp -B build && cmake --build build`, "
                                  "then pass --plugin-library or set $" + PLUGIN_ENV)
