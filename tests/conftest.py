"""Fixtures shared by several test files."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A randomly initialised ``cris_tiny`` (seed 0, eval mode) saved in our checkpoint format."""
    import torch

    from cris_edge.model import build_cris, save_checkpoint

    torch.manual_seed(0)
    model = build_cris("cris_tiny").eval()
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pth", model, model.config.to_dict())
