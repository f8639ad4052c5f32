"""The three deployment graphs (docs/design.md) as torch modules, exported to ONNX.

    text    tokens int32 [B, L], eot_index int32 [B]               -> word [B, L, Dt], state [B, E]
    visual  image float [B, 3, S, S]                               -> c3, c4, c5
    head    c3, c4, c5, word, pad_mask bool [B, L], state          -> one of `HEAD_OUTPUTS`:
            "logits"    logits [B, 1, S/4, S/4]                       (runs anywhere; the default)
            "features"  z_v [B, C, S/4, S/4], kernel [B, C*9+1]      (SimUpsample runs after the engine)
            "plugin"    prob [B, 1, S, S] from a SimUpsample node      (see cris_edge.export.plugin)

Only the batch is dynamic: S is fixed per bundle and L is the config's ``word_len`` (the
tokenizer pads every text to it). The export uses torch's dynamo exporter, which specialises
every static size, so the per-sample dynamic convolution takes its matmul + constant-conv form
(see ``cris_edge.model.projector.dynamic_conv``); `cris_edge.export.onnx_passes` then bakes the
remaining shape-only constants.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import onnx
import torch
from torch import nn

from cris_edge.bundle import GRAPH_INPUTS, GRAPH_OUTPUTS, GRAPHS, HEAD_OUTPUT_NAMES
from cris_edge.constants import EOT_ID, SOT_ID
from cris_edge.model import CRIS

from .onnx_passes import BATCH, fold_constants, tidy
from .quiet import quiet_loggers

#: ONNX opset of every graph: >= 17 (LayerNormalization) and within TensorRT 10's parser (<= 20).
OPSET = 18
GRAPH_NAMES = GRAPHS["cris"]
#: Batch of the example inputs traced at export (not 1: torch.export would specialise it).
_EXAMPLE_BATCH = 2
#: Loggers of the exporter stack, silenced (up to WARNING, this thread only) during an export: the
#: ONNX optimiser and IR passes log every pass and folded constant (e.g. "Skipping constant
#: folding for op Split with multiple outputs", a WARNING, on each graph).
_EXPORTER_LOGGERS = ("torch.onnx", "torch.export", "torch._export", "onnxscript", "onnx_ir")
#: Warnings the exporter emits on every export that say nothing about the graph: torch's own
#: pytree deprecation (raised inside torch.export) and the note that every input's batch axis,
#: all named "batch", shares one symbol.
_EXPORTER_WARNINGS = (
    (FutureWarning, r"`isinstance\(treespec, LeafSpec\)` is deprecated"),
    (UserWarning, r"# The axis name: \w+ will not be used, since it shares the same shape constraints"),
)


@dataclass(frozen=True)
class GraphSpec:
    """Names of a graph's inputs and outputs, in order."""

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


#: The graphs' interfaces, as the bundle format defines them (`cris_edge.bundle`).
SPECS = {name: GraphSpec(GRAPH_INPUTS["cris"][name], GRAPH_OUTPUTS["cris"].get(name, HEAD_OUTPUT_NAMES["logits"]))
         for name in GRAPH_NAMES}
#: Outputs of the torch head module per head variant: the bundle's, but for the plugin variant, whose
#: SimUpsample node (appended to its ONNX graph afterwards, see cris_edge.export.plugin) turns these
#: three into ``prob``.
HEAD_OUTPUTS = {**HEAD_OUTPUT_NAMES, "plugin": ("z_v", "weight", "bias")}


class TextGraph(nn.Module):
    """``(tokens int32 [B, L], eot_index int32 [B])`` -> ``(word float [B, L, vis_dim], state
    float [B, word_dim])``."""

    def __init__(self, model: CRIS):
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor, eot_index: torch.Tensor):
        return self.model.encode_text(tokens, eot_index)


class VisualGraph(nn.Module):
    """``image float [B, 3, S, S]`` (CLIP-normalised) -> ``(c3, c4, c5)`` at strides 8, 16, 32."""

    def __init__(self, model: CRIS):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor):
        return self.model.encode_image(image)


class HeadGraph(nn.Module):
    """``(c3, c4, c5, word, pad_mask bool [B, L], state)`` -> the ``outputs`` of `HEAD_OUTPUTS`:
    logits ``[B, 1, S/4, S/4]``; or ``z_v [B, C, S/4, S/4]`` and the projector's raw text output
    ``kernel [B, C*9+1]`` (3x3 weights, then the bias); or ``z_v``, ``weight [B, C, 3, 3]`` and
    ``bias [B]``."""

    def __init__(self, model: CRIS, outputs: str = "logits"):
        super().__init__()
        self.model = model
        self.outputs = outputs

    def forward(self, c3, c4, c5, word, pad_mask, state):
        if self.outputs == "logits":
            return self.model.head(c3, c4, c5, word, pad_mask, state)
        proj = self.model.proj
        z_v = proj.visual(self.model.fuse(c3, c4, c5, word, pad_mask, state))
        if self.outputs == "features":
            return z_v, proj.txt(state)
        return (z_v, *proj.text_kernel(state))


def example_inputs(model: CRIS, name: str, batch: int = _EXAMPLE_BATCH) -> tuple[torch.Tensor, ...]:
    """Inputs of graph ``name`` for ``model`` at ``batch`` (values arbitrary, shapes and dtypes
    exact): the tuple `export_graph` traces with."""
    cfg = model.config
    s, length = cfg.input_size, cfg.word_len
    if name == "text":
        tokens = torch.zeros(batch, length, dtype=torch.int32)
        tokens[:, 0], tokens[:, 1], tokens[:, 2] = SOT_ID, 320, EOT_ID  # SOT, "a", EOT
        return tokens, torch.full((batch,), 2, dtype=torch.int32)
    if name == "visual":
        return (torch.zeros(batch, 3, s, s),)
    if name == "head":
        c3, c4, c5 = (torch.zeros(batch, c, s // stride, s // stride)
                      for c, stride in zip(cfg.fpn_in, (8, 16, 32)))
        pad_mask = torch.ones(batch, length, dtype=torch.bool)
        pad_mask[:, :3] = False
        return c3, c4, c5, torch.zeros(batch, length, cfg.vis_dim), pad_mask, torch.zeros(batch, cfg.word_dim)
    raise ValueError(f"unknown graph {name!r}; graphs are {GRAPH_NAMES}")


def export_graph(model: CRIS, name: str, head_output: str = "logits") -> onnx.ModelProto:
    """Export graph ``name`` of ``model`` (eval mode, float32) to an ONNX model with a dynamic
    ``batch`` dimension, constants folded and checked by ``onnx.checker``. ``head_output``
    picks the head's outputs (`HEAD_OUTPUTS`)."""
    if model.training:
        raise ValueError("export needs the model in eval mode (call model.eval())")
    if head_output not in HEAD_OUTPUTS:
        raise ValueError(f"head output must be one of {sorted(HEAD_OUTPUTS)}, got {head_output!r}")
    spec = SPECS[name]
    if name == "head":
        module, outputs = HeadGraph(model, head_output).eval(), HEAD_OUTPUTS[head_output]
    else:
        module, outputs = {"text": TextGraph, "visual": VisualGraph}[name](model).eval(), spec.outputs
    args = example_inputs(model, name)
    batch = torch.export.Dim(BATCH, min=1, max=4096)
    # catch_warnings swaps the process's filter list for the block: export is not called from
    # the runtime's threads (Segmenter), and only the known warnings above are ignored.
    with warnings.catch_warnings(), quiet_loggers(*_EXPORTER_LOGGERS):
        for category, message in _EXPORTER_WARNINGS:
            warnings.filterwarnings("ignore", message, category)
        program = torch.onnx.export(
            module, args, dynamo=True, opset_version=OPSET, input_names=list(spec.inputs),
            output_names=list(outputs), dynamic_shapes=tuple({0: batch} for _ in args),
            external_data=False, verbose=False)
    graph = tidy(fold_constants(program.model_proto))
    graph.graph.name = name
    onnx.checker.check_model(graph, full_check=True)
    return graph
