"""SRCNN: the first convolutional super-resolution network."""

from __future__ import annotations

import torch
from torch import nn

from medsr.models.blocks import (
    bicubic_upsample,
    check_scale,
    conv,
    default_out_channels,
    full_precision,
)
from medsr.models.registry import register_model


@register_model("srcnn")
class SRCNN(nn.Module):
    """SRCNN on a bicubic-pre-upsampled input.

    Dong, Loy, He and Tang, "Learning a Deep Convolutional Network for Image Super-Resolution",
    ECCV 2014; and "Image Super-Resolution Using Deep Convolutional Networks", IEEE TPAMI 2016.

    Three stages: patch extraction (9×9, ``num_features`` = 64 filters), non-linear mapping
    (1×1, ``num_features // 2`` = 32 filters) and reconstruction (5×5) — the paper's 9-1-5
    network. ``num_blocks`` is the number of mapping layers (1 in the base network; the TPAMI
    paper also studies deeper 9-1-1-5 variants); ``kernel_sizes`` = (extraction, mapping,
    reconstruction), e.g. ``(9, 5, 5)`` for the paper's 9-5-5. Unlike the paper (valid
    convolutions, smaller output) every layer is zero-padded so the output keeps the size of the
    bicubic-upsampled input. The forward takes the low-resolution image and upsamples it with
    bicubic itself, so it has the same interface as every other medsr model.
    """

    learned = True

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int | None = None,
        num_features: int = 64,
        num_blocks: int = 1,
        scale: int = 2,
        kernel_sizes: tuple[int, int, int] = (9, 1, 5),
        mapping_features: int | None = None,
    ):
        super().__init__()
        self.scale = check_scale(scale)
        self.in_channels = in_channels
        self.out_channels = default_out_channels(in_channels, out_channels)
        k1, k2, k3 = kernel_sizes
        n2 = mapping_features if mapping_features is not None else max(1, num_features // 2)
        layers: list[nn.Module] = [conv(in_channels, num_features, k1), nn.ReLU(inplace=True)]
        width = num_features
        for _ in range(num_blocks):
            layers += [conv(width, n2, k2), nn.ReLU(inplace=True)]
            width = n2
        layers.append(conv(width, self.out_channels, k3))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the first and last layers read and write intensities: fp32 under autocast
        h = full_precision(self.body[0], bicubic_upsample(x, self.scale))
        return full_precision(self.body[-1], self.body[1:-1](h))

    def feature_layers(self) -> list[nn.Module]:
        """Modules whose outputs are the intermediate features (the ReLUs), shallow to deep."""
        return [m for m in self.body if isinstance(m, nn.ReLU)]
