"""A light 5-layer residual CNN for self-supervised ("zero-shot") scale transfer."""

from __future__ import annotations

from medsr.models.blocks import BicubicResidualNet
from medsr.models.registry import register_model


@register_model("residual5")
class Residual5(BicubicResidualNet):
    """Five 3×3 conv layers (conv-ReLU ×4 + conv, 64 filters) learning the residual over bicubic.

    The image-specific network of ZSSR — Shocher, Cohen and Irani, "'Zero-Shot'
    Super-Resolution using Deep Internal Learning", CVPR 2018 — trained on the test image
    itself (its own downscaled copies); ZSSR uses 8 layers, this is a shallower 5-layer variant
    so that fitting it per image/volume is fast on a CPU. Structurally it is a short VDSR
    (Kim et al., CVPR 2016). ``num_blocks`` = number of conv layers (5), ``num_features`` = width.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int | None = None,
        num_features: int = 64,
        num_blocks: int = 5,
        scale: int = 2,
    ):
        super().__init__(in_channels, out_channels, num_features, num_blocks, scale)
