"""Small building blocks shared by the CRIS neck and projector.

Module nesting (``nn.Sequential`` indices) mirrors CRIS.pytorch so state-dict keys match an
official checkpoint: ``conv_bn_relu`` -> ``.0`` conv, ``.1`` batch norm.
"""

from __future__ import annotations

import torch
from torch import nn


def conv_bn_relu(in_dim: int, out_dim: int, kernel_size: int = 1, padding: int = 0,
                 stride: int = 1) -> nn.Sequential:
    """Conv2d (no bias) -> BatchNorm2d -> ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_dim, out_dim, kernel_size, stride, padding, bias=False),
        nn.BatchNorm2d(out_dim),
        nn.ReLU(True),
    )


def linear_bn_relu(in_dim: int, out_dim: int) -> nn.Sequential:
    """Linear (no bias) -> BatchNorm1d -> ReLU, on ``[B, in_dim]``."""
    return nn.Sequential(nn.Linear(in_dim, out_dim, bias=False), nn.BatchNorm1d(out_dim), nn.ReLU(True))


def coordinate_map(batch: int, height: int, width: int, like: torch.Tensor) -> torch.Tensor:
    """``[B, 2, H, W]`` normalised coordinates: channel 0 is x, channel 1 is y, both in [-1, 1]
    (``linspace``, so the first and last pixel centres sit exactly at -1 and 1)."""
    xs = torch.linspace(-1, 1, width, device=like.device, dtype=like.dtype)
    ys = torch.linspace(-1, 1, height, device=like.device, dtype=like.dtype)
    grid_x = xs.view(1, 1, 1, width).expand(batch, 1, height, width)
    grid_y = ys.view(1, 1, height, 1).expand(batch, 1, height, width)
    return torch.cat([grid_x, grid_y], dim=1)


class CoordConv(nn.Module):
    """Concatenate the coordinate map to the input, then conv -> BN -> ReLU.

    ``[B, C, H, W]`` -> ``[B, out_channels, H', W']``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 padding: int = 1, stride: int = 1):
        super().__init__()
        self.conv1 = conv_bn_relu(in_channels + 2, out_channels, kernel_size, padding, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        return self.conv1(torch.cat([x, coordinate_map(b, h, w, x)], dim=1))
