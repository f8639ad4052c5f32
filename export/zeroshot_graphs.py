"""The three graphs of a zero-shot Global-Local CLIP bundle (kind ``zeroshot``), as torch modules
over an open_clip ``CLIP`` (eval mode, float32), exported to ONNX.

    text    tokens int32 [B, 77], eot_index int32 [B]          -> features [B, D]
    global  image float [1, 3, S, S], masks float [N, 1, g, g]  -> features [N, D]
    local   crops float [N, 3, S, S]                            -> features [N, D]

Each computes what the PyTorch reference (`cris_edge.zeroshot.method.GlobalLocal`) computes,
with the work that does not depend on the proposal done once:

* text: the causal transformer, then only the EOT token goes through ``ln_final`` and the
  projection (gathered at ``eot_index``); L2-normalised for a ResNet CLIP, raw for a ViT.
* global, ResNet: the trunk runs once. The attention pool sees the masked tokens
  ``m_p * t_p`` (``t_p`` the L2-normalised layer4 feature at position p, ``m_p`` the soft mask),
  the mean token ``(1/P) sum_p m_p t_p`` and the positional embedding ``pos``. Every projection
  W (query, key, value) is linear, so ``W (m_p t_p + pos_p) + b = m_p (W t_p) + (W pos_p + b)``
  and the mean token's ``W x_0 = (1/P) sum_p m_p (W t_p)``: the three products ``W t_p`` are
  computed once per image, ``W pos + b`` is a constant, and per proposal only mask-weighted sums
  and the attention of token 0 (the only output the pool returns) remain. Exact, up to rounding.
* global, ViT: blocks before the last ``masked_blocks`` run once at batch 1; before each of
  the last ones the patch tokens (not the class token) are multiplied by the mask, at batch N.
  Output ``ln_post(class token) @ proj``, not normalised.
* local: CLIP's image embedding of each crop (ResNet: attention-pool token 0 only, then
  L2-normalised; ViT: raw).

Only the batch is dynamic; `cris_edge.export.onnx_passes` bakes the shape-only constants.
"""

from __future__ import annotations

import warnings
from typing import Any

import onnx
import torch
import torch.nn.functional as F
from torch import nn

from cris_edge.bundle import GRAPH_INPUTS, GRAPH_OUTPUTS, GRAPHS
from cris_edge.constants import CLIP_CONTEXT, EOT_ID, SOT_ID

from .graphs import _EXPORTER_LOGGERS, _EXPORTER_WARNINGS, OPSET
from .onnx_passes import BATCH, fold_constants, tidy
from .quiet import quiet_loggers

GRAPH_NAMES = GRAPHS["zeroshot"]
#: The official method masks the patch tokens before each of the ViT's last 3 blocks.
MASKED_BLOCKS = 3
_EXAMPLE_BATCH = 2


def is_resnet(clip: nn.Module) -> bool:
    """Whether ``clip``'s image tower is a ModifiedResNet (else a VisionTransformer)."""
    return hasattr(clip.visual, "attnpool")


def grid_size(clip: nn.Module) -> int:
    """Side of the visual grid: S/32 for a ResNet, S/patch for a ViT."""
    visual = clip.visual
    size = visual.image_size if isinstance(visual.image_size, int) else visual.image_size[0]
    if is_resnet(clip):
        return size // 32
    patch = visual.conv1.kernel_size[0]
    return size // patch


def image_size(clip: nn.Module) -> int:
    size = clip.visual.image_size
    return size if isinstance(size, int) else size[0]


def describe(clip: nn.Module) -> dict[str, Any]:
    """The CLIP's architecture, as a bundle's ``model`` field records it."""
    visual = clip.visual
    out: dict[str, Any] = {"backbone": "resnet" if is_resnet(clip) else "vit", "image_size": image_size(clip),
                           "grid": grid_size(clip), "embed_dim": int(clip.text_projection.shape[1]),
                           "text_width": int(clip.token_embedding.weight.shape[1]),
                           "text_layers": len(clip.transformer.resblocks), "context_length": CLIP_CONTEXT}
    if is_resnet(clip):
        out.update(vision_layers=[len(getattr(visual, f"layer{i}")) for i in range(1, 5)],
                   vision_width=int(visual.conv1.out_channels * 2), heads=int(visual.attnpool.num_heads))
    else:
        out.update(vision_width=int(visual.conv1.out_channels), vision_layers=len(visual.transformer.resblocks),
                   patch_size=int(visual.conv1.kernel_size[0]))
    return out


def _normalize(x: torch.Tensor) -> torch.Tensor:
    # sqrt of a sum of squares, not vector_norm: its ReduceL2 is outside TensorRT's parser list
    return x / torch.sqrt((x * x).sum(dim=-1, keepdim=True))


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """``[..., C]`` -> ``[heads, ..., C / heads]`` (heads first, for batched matmuls)."""
    return x.reshape(*x.shape[:-1], heads, x.shape[-1] // heads).movedim(-2, 0)


class TextGraph(nn.Module):
    """``(tokens int32 [B, 77], eot_index int32 [B])`` -> ``features [B, D]``."""

    def __init__(self, clip: nn.Module):
        super().__init__()
        self.clip = clip
        self.normalize = is_resnet(clip)

    def forward(self, tokens: torch.Tensor, eot_index: torch.Tensor) -> torch.Tensor:
        clip = self.clip
        length = tokens.shape[1]
        x = clip.token_embedding(tokens) + clip.positional_embedding[:length]
        x = clip.transformer(x, attn_mask=clip.attn_mask[:length, :length])
        # the EOT rows of the flattened tokens: one Gather
        rows = torch.arange(x.shape[0], device=x.device) * length + eot_index.long()
        eot = clip.ln_final(torch.index_select(x.reshape(-1, x.shape[-1]), 0, rows))
        proj = clip.text_projection
        out = proj(eot) if isinstance(proj, nn.Linear) else eot @ proj
        return _normalize(out) if self.normalize else out


class ResNetPool(nn.Module):
    """CLIP's attention pool, only its token 0, over ``m_p * t_p`` with the projections of the
    tokens given: ``(projected [3, P, C] = W_{q,k,v} t_p, masks [N, P])`` -> ``[N, D]``.
    ``masks`` all ones gives the plain pool of ``t``."""

    def __init__(self, pool: nn.Module):
        super().__init__()
        self.heads = pool.num_heads
        weights = [pool.q_proj, pool.k_proj, pool.v_proj]
        with torch.no_grad():
            pos = pool.positional_embedding.float()
            # W pos + b of every token, per projection: [3, P + 1, C]
            self.register_buffer("fixed", torch.stack([pos @ w.weight.T + w.bias for w in weights]))
        self.weight = nn.Parameter(torch.stack([w.weight for w in weights]).detach(), requires_grad=False)
        self.c_proj = pool.c_proj

    def project(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens [B, P, C]`` -> ``[3, B, P, C]``: W_q, W_k, W_v times each token (no bias)."""
        return torch.stack([tokens @ self.weight[i].T for i in range(3)])

    def forward(self, projected: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """``projected [3, B, P, C]`` (B = 1: one image for every mask; B = N: item n with mask
        n), ``masks [N, P]`` -> ``[N, D]``."""
        n, positions = masks.shape
        fixed = self.fixed
        a_q, a_k, a_v = projected[0], projected[1], projected[2]          # [B, P, C]
        mean = lambda a: torch.matmul(masks[:, None, :], a)[:, 0] / positions  # noqa: E731  [N, C]
        q0 = mean(a_q) + fixed[0, 0]
        k0 = mean(a_k) + fixed[1, 0]
        v0 = mean(a_v) + fixed[2, 0]
        heads, width = self.heads, q0.shape[-1]
        scale = (width // heads) ** -0.5
        q = _heads(q0, heads)[:, :, None, :] * scale                       # [h, N, 1, d]
        k_var, k_fix = _heads(a_k, heads), _heads(fixed[1, 1:], heads)     # [h, B, P, d], [h, P, d]
        v_var, v_fix = _heads(a_v, heads), _heads(fixed[2, 1:], heads)
        m = masks[None, :, None, :]                                        # [1, N, 1, P]
        s_var = torch.matmul(q, k_var.transpose(-1, -2))                   # [h, N, 1, P]
        s_fix = torch.matmul(q, k_fix[:, None].transpose(-1, -2))          # [h, N, 1, P]
        s0 = torch.matmul(q, _heads(k0, heads)[:, :, :, None])             # [h, N, 1, 1]
        attn = torch.softmax(torch.cat([s0, m * s_var + s_fix], dim=-1), dim=-1)
        a0, ap = attn[..., :1], attn[..., 1:]
        out = a0 * _heads(v0, heads)[:, :, None, :] + torch.matmul(ap * m, v_var) + torch.matmul(ap, v_fix[:, None])
        out = out[:, :, 0].movedim(0, 1).reshape(n, width)                 # [N, C]
        return self.c_proj(out)


def _resnet_trunk(visual: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """``image [B, 3, S, S]`` -> layer4 tokens ``[B, P, C]``."""
    x = visual.layer4(visual.layer3(visual.layer2(visual.layer1(visual.stem(image)))))
    return x.flatten(2).transpose(1, 2)


class ResNetGlobal(nn.Module):
    """``(image [1, 3, S, S], masks [N, 1, g, g])`` -> ``[N, D]``: see the module docstring."""

    def __init__(self, clip: nn.Module):
        super().__init__()
        self.visual = clip.visual
        self.pool = ResNetPool(clip.visual.attnpool)

    def forward(self, image: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        tokens = _normalize(_resnet_trunk(self.visual, image))          # [1, P, C]
        return self.pool(self.pool.project(tokens), masks.flatten(1))


class ResNetLocal(nn.Module):
    """``crops [N, 3, S, S]`` -> L2-normalised CLIP image embeddings ``[N, D]``."""

    def __init__(self, clip: nn.Module):
        super().__init__()
        self.visual = clip.visual
        self.pool = ResNetPool(clip.visual.attnpool)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        tokens = _resnet_trunk(self.visual, crops)                       # [N, P, C]
        projected = self.pool.project(tokens)                            # [3, N, P, C]
        # each crop with its own tokens (B = N) and an all-ones mask: the plain pool
        return _normalize(self.pool(projected, torch.ones_like(tokens[:, :, 0])))


def _run_block(block: nn.Module, x: torch.Tensor, batch_first: bool) -> torch.Tensor:
    if batch_first:
        return block(x)
    return block(x.transpose(0, 1)).transpose(0, 1)


class ViTGlobal(nn.Module):
    """``(image [1, 3, S, S], masks [N, 1, g, g])`` -> ``[N, D]``: token masking before each
    of the last `MASKED_BLOCKS` blocks."""

    def __init__(self, clip: nn.Module, masked_blocks: int = MASKED_BLOCKS):
        super().__init__()
        self.visual = clip.visual
        self.masked = masked_blocks

    def forward(self, image: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        visual = self.visual
        blocks, batch_first = visual.transformer.resblocks, getattr(visual.transformer, "batch_first", True)
        x = visual._embeds(image)                                        # [1, 1 + P, W]
        first = len(blocks) - self.masked
        for block in blocks[:first]:
            x = _run_block(block, x, batch_first)
        m = masks.flatten(1)[:, :, None]                                 # [N, P, 1]
        for block in blocks[first:]:
            x = torch.cat([x[:, :1].expand(m.shape[0], -1, -1), x[:, 1:] * m], dim=1)
            x = _run_block(block, x, batch_first)
        return visual.ln_post(x[:, 0]) @ visual.proj


class ViTLocal(nn.Module):
    """``crops [N, 3, S, S]`` -> raw CLIP image embeddings ``[N, D]``."""

    def __init__(self, clip: nn.Module):
        super().__init__()
        self.visual = clip.visual

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        visual = self.visual
        blocks, batch_first = visual.transformer.resblocks, getattr(visual.transformer, "batch_first", True)
        x = visual._embeds(crops)
        for block in blocks:
            x = _run_block(block, x, batch_first)
        return visual.ln_post(x[:, 0]) @ visual.proj


def graph_module(clip: nn.Module, name: str) -> nn.Module:
    """The torch module of graph ``name`` for ``clip`` (eval mode)."""
    resnet = is_resnet(clip)
    modules = {"text": TextGraph, "global": ResNetGlobal if resnet else ViTGlobal,
               "local": ResNetLocal if resnet else ViTLocal}
    if name not in modules:
        raise ValueError(f"unknown graph {name!r}; graphs are {GRAPH_NAMES}")
    return modules[name](clip).eval()


def example_inputs(clip: nn.Module, name: str, batch: int = _EXAMPLE_BATCH) -> tuple[torch.Tensor, ...]:
    """Inputs of graph ``name`` (values arbitrary, shapes and dtypes exact)."""
    size, grid = image_size(clip), grid_size(clip)
    if name == "text":
        tokens = torch.zeros(batch, CLIP_CONTEXT, dtype=torch.int32)
        tokens[:, 0], tokens[:, 1], tokens[:, 2] = SOT_ID, 320, EOT_ID
        return tokens, torch.full((batch,), 2, dtype=torch.int32)
    if name == "global":
        return torch.zeros(1, 3, size, size), torch.ones(batch, 1, grid, grid)
    if name == "local":
        return (torch.zeros(batch, 3, size, size),)
    raise ValueError(f"unknown graph {name!r}; graphs are {GRAPH_NAMES}")


def export_graph(clip: nn.Module, name: str) -> onnx.ModelProto:
    """Export graph ``name`` of ``clip`` (eval mode, float32) to ONNX: dynamic ``batch`` on
    every input but the global graph's image (batch 1), constants folded, checked."""
    if clip.training:
        raise ValueError("export needs the CLIP in eval mode (call clip.eval())")
    module = graph_module(clip, name)
    args = example_inputs(clip, name)
    inputs, outputs = GRAPH_INPUTS["zeroshot"][name], GRAPH_OUTPUTS["zeroshot"][name]
    batch = torch.export.Dim(BATCH, min=1, max=4096)
    dynamic = tuple(None if (name, i) == ("global", "image") else {0: batch} for i in inputs)
    with warnings.catch_warnings(), quiet_loggers(*_EXPORTER_LOGGERS), torch.no_grad():
        for category, message in _EXPORTER_WARNINGS:
            warnings.filterwarnings("ignore", message, category)
        program = torch.onnx.export(
            module, args, dynamo=True, opset_version=OPSET, input_names=list(inputs), output_names=list(outputs),
            dynamic_shapes=dynamic, external_data=False, verbose=False)
    graph = tidy(fold_constants(program.model_proto))
    graph.graph.name = name
    onnx.checker.check_model(graph, full_check=True)
    return graph
