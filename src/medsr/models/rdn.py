"""RDN: residual dense network."""

from __future__ import annotations

import torch
from torch import nn

from medsr.models.blocks import (
    ResidualDenseBlock,
    Upsampler,
    check_scale,
    conv,
    default_out_channels,
)
from medsr.models.registry import register_model


@register_model("rdn")
class RDN(nn.Module):
    """Residual dense network.

    Zhang, Tian, Kong, Zhong and Fu, "Residual Dense Network for Image Super-Resolution",
    CVPR 2018.

    Shallow feature extraction (two 3×3 convs, ``G0`` = ``num_features`` = 64), ``D`` =
    ``num_blocks`` = 16 residual dense blocks of ``C`` = ``num_layers`` = 8 conv layers with
    growth rate ``G`` = ``growth`` (64; defaults to ``num_features``), each with local feature
    fusion (1×1) and local residual learning; global feature fusion (1×1 over the concatenated
    block outputs, then 3×3) with global residual learning from the first shallow conv; then a
    sub-pixel upsampler (ESPCN; two ×2 stages at ×4) and a 3×3 reconstruction conv.
    """

    learned = True

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int | None = None,
        num_features: int = 64,
        num_blocks: int = 16,
        scale: int = 2,
        num_layers: int = 8,
        growth: int | None = None,
    ):
        super().__init__()
        self.scale = check_scale(scale)
        self.in_channels = in_channels
        self.out_channels = default_out_channels(in_channels, out_channels)
        g0 = num_features
        g = growth if growth is not None else num_features
        self.sfe1 = conv(in_channels, g0, 3)
        self.sfe2 = conv(g0, g0, 3)
        self.blocks = nn.ModuleList(
            ResidualDenseBlock(g0, g, num_layers) for _ in range(num_blocks)
        )
        self.gff = nn.Sequential(conv(num_blocks * g0, g0, 1), conv(g0, g0, 3))
        self.upsample = Upsampler(self.scale, g0)
        self.tail = conv(g0, self.out_channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f_1 = self.sfe1(x)
        feats = self.sfe2(f_1)
        outs = []
        for block in self.blocks:
            feats = block(feats)
            outs.append(feats)
        feats = self.gff(torch.cat(outs, dim=1)) + f_1
        return self.tail(self.upsample(feats))
