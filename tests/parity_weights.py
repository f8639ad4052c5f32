"""Deterministic CRIS weights in the official checkpoint layout, for parity tests.

Every tensor is drawn from its own generator seeded by ``crc32(key) ^ seed``, with a scale
chosen by what the tensor is (fan-in scaled conv/linear weights, BN statistics near identity,
small biases), so the values depend only on the key, the shape and the seed: never on module
construction order. The same function produced the weights fed to the official code when the
reference logits in ``tests/data/parity`` were computed (``tests/reference/make_parity_fixtures.py``).
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import torch


def _draw(key: str, shape: tuple, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed((zlib.crc32(key.encode()) ^ seed) & 0x7FFFFFFF)
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "num_batches_tracked":
        return torch.zeros(shape, dtype=torch.long)
    if key.endswith("logit_scale"):
        return torch.full(shape, math.log(1 / 0.07))
    uniform = lambda lo, hi: lo + (hi - lo) * torch.rand(shape, generator=gen)  # noqa: E731
    normal = lambda std: torch.randn(shape, generator=gen) * std  # noqa: E731
    if leaf == "running_var":
        return uniform(0.5, 1.5)
    if leaf == "running_mean":
        return normal(0.1)
    if leaf == "weight" and len(shape) == 1:  # BatchNorm / LayerNorm scale
        return uniform(0.5, 1.0)
    if leaf == "bias" or leaf == "in_proj_bias":
        return normal(0.05)
    if "token_embedding" in key:
        return normal(0.02)
    if "positional_embedding" in key:
        return normal(0.1)
    if key.endswith("text_projection"):
        return normal(shape[0] ** -0.5)
    fan_in = int(np.prod(shape[1:]))
    return normal(fan_in ** -0.5)


def official_layout_weights(model_state: dict, seed: int) -> dict:
    """Official-layout state dict (``module.`` prefix) for the keys/shapes of ``model_state``
    (a CRIS state dict without prefix), filled deterministically."""
    return {f"module.{k}": _draw(k, tuple(v.shape), seed) for k, v in model_state.items()}
