"""The text-gated FPN neck of CRIS: fuses C3/C4/C5 with the sentence feature."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .layers import CoordConv, conv_bn_relu, linear_bn_relu


def _upsample2x(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


class FPN(nn.Module):
    """Multi-modal FPN.

    Inputs: ``c3 [B, fpn_in[0], S/8, S/8]``, ``c4 [B, fpn_in[1], S/16, S/16]``,
    ``c5 [B, fpn_in[2], S/32, S/32]`` and the sentence feature ``state [B, fpn_in[2]]``.
    Output: ``[B, fpn_out[1], S/16, S/16]``. C5 is gated by the projected sentence
    (element-wise product, then BN + ReLU), merged top-down into C4 and bottom-up from C3,
    aggregated, and finished by a CoordConv and a 3x3 conv.
    """

    def __init__(self, in_channels: Sequence[int] = (512, 1024, 1024),
                 out_channels: Sequence[int] = (256, 512, 1024)):
        super().__init__()
        c3_in, c4_in, c5_in = in_channels
        c3_out, mid, c5_out = out_channels
        self.txt_proj = linear_bn_relu(c5_in, c5_out)
        self.f1_v_proj = conv_bn_relu(c5_in, c5_out, 1, 0)
        self.norm_layer = nn.Sequential(nn.BatchNorm2d(c5_out), nn.ReLU(True))
        self.f2_v_proj = conv_bn_relu(c4_in, mid, 3, 1)
        self.f2_cat = conv_bn_relu(c5_out + mid, mid, 1, 0)
        self.f3_v_proj = conv_bn_relu(c3_in, c3_out, 3, 1)
        self.f3_cat = conv_bn_relu(c3_out + mid, mid, 1, 0)
        self.f4_proj5 = conv_bn_relu(c5_out, mid, 3, 1)
        self.f4_proj4 = conv_bn_relu(mid, mid, 3, 1)
        self.f4_proj3 = conv_bn_relu(mid, mid, 3, 1)
        self.aggr = conv_bn_relu(3 * mid, mid, 1, 0)
        self.coordconv = nn.Sequential(CoordConv(mid, mid, 3, 1), conv_bn_relu(mid, mid, 3, 1))

    def forward(self, c3: torch.Tensor, c4: torch.Tensor, c5: torch.Tensor,
                state: torch.Tensor) -> torch.Tensor:
        gate = self.txt_proj(state)[:, :, None, None]
        f5 = self.norm_layer(self.f1_v_proj(c5) * gate)
        f4 = self.f2_cat(torch.cat([self.f2_v_proj(c4), _upsample2x(f5)], dim=1))
        f3 = F.avg_pool2d(self.f3_v_proj(c3), 2, 2)
        f3 = self.f3_cat(torch.cat([f3, f4], dim=1))
        fused = torch.cat([self.f4_proj3(f3), self.f4_proj4(f4), _upsample2x(self.f4_proj5(f5))], dim=1)
        return self.coordconv(self.aggr(fused))
