"""SRDenseNet: densely connected blocks with dense skip connections."""

from __future__ import annotations

import torch
from torch import nn

from medsr.models.blocks import (
    DeconvUpsampler,
    DenseBlock,
    Upsampler,
    check_scale,
    conv,
    default_out_channels,
)
from medsr.models.registry import register_model


@register_model("srdensenet")
class SRDenseNet(nn.Module):
    """SRDenseNet, the "All" variant (dense skip connections from every block).

    Tong, Li, Liu and Gao, "Image Super-Resolution Using Dense Skip Connections", ICCV 2017.

    Layout: a 3×3 conv extracts low-level features (``num_layers · growth`` = 128 channels);
    ``num_blocks`` (8) dense blocks of ``num_layers`` (8) 3×3 conv + ReLU layers with growth rate
    ``num_features`` (k = 16) each output 128 channels; the low-level features and the outputs of
    *all* blocks are concatenated (128 + 8·128 = 1152 channels, "SRDenseNet_All"), a 1×1
    bottleneck reduces them to ``bottleneck_features`` (256), two 3×3 deconvolution layers
    (stride 2, 256 filters, ReLU) upsample ×4 (the paper's only factor) and a 3×3 conv
    reconstructs the image.

    Constructor names: ``num_features`` is the **growth rate** k (16 in the paper); the
    bottleneck width defaults to ``16·k`` (= 256). At ×2 one deconvolution stage is used, at ×3
    one stride-3 deconvolution; ``upsampler="pixelshuffle"`` swaps the deconvolutions for
    sub-pixel convolutions (no checkerboard artefacts).
    """

    learned = True

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int | None = None,
        num_features: int = 16,
        num_blocks: int = 8,
        scale: int = 2,
        num_layers: int = 8,
        bottleneck_features: int | None = None,
        upsampler: str = "deconv",
    ):
        super().__init__()
        self.scale = check_scale(scale)
        self.in_channels = in_channels
        self.out_channels = default_out_channels(in_channels, out_channels)
        growth = num_features
        width = growth * num_layers
        bottleneck = bottleneck_features if bottleneck_features is not None else 16 * growth
        self.head = nn.Sequential(conv(in_channels, width, 3), nn.ReLU(inplace=True))
        self.blocks = nn.ModuleList(
            DenseBlock(width, growth, num_layers) for _ in range(num_blocks)
        )
        self.bottleneck = nn.Sequential(
            conv(width * (num_blocks + 1), bottleneck, 1), nn.ReLU(inplace=True)
        )
        if upsampler == "deconv":
            self.upsample: nn.Module = DeconvUpsampler(self.scale, bottleneck, bottleneck)
        elif upsampler == "pixelshuffle":
            self.upsample = Upsampler(self.scale, bottleneck, act="relu")
        else:
            raise ValueError(f"upsampler must be 'deconv' or 'pixelshuffle', got {upsampler!r}")
        self.tail = conv(bottleneck, self.out_channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.head(x)
        skips = [feats]
        for block in self.blocks:
            feats = block(feats)
            skips.append(feats)
        return self.tail(self.upsample(self.bottleneck(torch.cat(skips, dim=1))))
