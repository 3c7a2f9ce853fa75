"""Residual-block generators: SRResNet (the SRGAN generator) and EDSR."""

from __future__ import annotations

import torch
from torch import nn

from medsr.models.blocks import (
    ResidualBlock,
    Upsampler,
    activation,
    check_scale,
    conv,
    default_out_channels,
)
from medsr.models.registry import register_model


@register_model("srresnet")
class SRResNet(nn.Module):
    """SRResNet, the generator of SRGAN.

    Ledig, Theis, Huszár, Caballero, Cunningham, Acosta, Aitken, Tejani, Totz, Wang and Shi,
    "Photo-Realistic Single Image Super-Resolution Using a Generative Adversarial Network",
    CVPR 2017.

    A 9×9 conv + PReLU head (``num_features`` = 64), ``num_blocks`` = 16 residual blocks
    (conv3×3-BN-PReLU-conv3×3-BN, identity skip), a conv3×3-BN closing the body with a long skip
    from the head, sub-pixel upsampling (conv → PixelShuffle(2) → PReLU per ×2 stage; one ×3
    stage at ×3) and a 9×9 reconstruction conv. Trained with MSE it is SRResNet; trained with the
    adversarial + content loss against :class:`~medsr.models.discriminators.SRGANDiscriminator`
    it is SRGAN's generator.
    """

    learned = True

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int | None = None,
        num_features: int = 64,
        num_blocks: int = 16,
        scale: int = 2,
    ):
        super().__init__()
        self.scale = check_scale(scale)
        self.in_channels = in_channels
        self.out_channels = default_out_channels(in_channels, out_channels)
        nf = num_features
        self.head = nn.Sequential(conv(in_channels, nf, 9), activation("prelu"))
        self.body = nn.Sequential(
            *(ResidualBlock(nf, batch_norm=True, act="prelu") for _ in range(num_blocks)),
            conv(nf, nf, 3, bias=False),
            nn.BatchNorm2d(nf),
        )
        self.upsample = Upsampler(self.scale, nf, act="prelu")
        self.tail = conv(nf, self.out_channels, 9)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.head(x)
        feats = feats + self.body(feats)
        return self.tail(self.upsample(feats))

    def feature_layers(self) -> list[nn.Module]:
        """The residual blocks, whose outputs are the intermediate features (for distillation)."""
        return [m for m in self.body if isinstance(m, ResidualBlock)]


@register_model("edsr")
class EDSR(nn.Module):
    """Enhanced deep super-resolution network (EDSR).

    Lim, Son, Kim, Nah and Lee, "Enhanced Deep Residual Networks for Single Image
    Super-Resolution", CVPR Workshops (NTIRE) 2017.

    SRResNet without batch normalisation: a 3×3 head conv, ``num_blocks`` residual blocks
    (conv-ReLU-conv, residual scaled by ``res_scale``), a 3×3 conv and a long skip, a sub-pixel
    upsampler without activation and a 3×3 reconstruction conv. Defaults are EDSR-baseline
    (16 blocks, 64 features, ``res_scale`` 1); the large EDSR is ``num_blocks=32,
    num_features=256`` with ``res_scale`` 0.1. ``res_scale=None`` picks 0.1 when
    ``num_features > 64`` and 1.0 otherwise.

    The paper subtracts the DIV2K RGB mean ("MeanShift") before the head and adds it back after
    the tail; medsr normalises intensities outside the model (per modality, recorded in the model
    card), so no mean shift is built in.
    """

    learned = True

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int | None = None,
        num_features: int = 64,
        num_blocks: int = 16,
        scale: int = 2,
        res_scale: float | None = None,
    ):
        super().__init__()
        self.scale = check_scale(scale)
        self.in_channels = in_channels
        self.out_channels = default_out_channels(in_channels, out_channels)
        nf = num_features
        if res_scale is None:
            res_scale = 0.1 if nf > 64 else 1.0
        self.res_scale = float(res_scale)
        self.head = conv(in_channels, nf, 3)
        self.body = nn.Sequential(
            *(ResidualBlock(nf, res_scale=self.res_scale) for _ in range(num_blocks)),
            conv(nf, nf, 3),
        )
        self.upsample = Upsampler(self.scale, nf)
        self.tail = conv(nf, self.out_channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.head(x)
        feats = feats + self.body(feats)
        return self.tail(self.upsample(feats))

    def feature_layers(self) -> list[nn.Module]:
        """The residual blocks, whose outputs are the intermediate features (for distillation)."""
        return [m for m in self.body if isinstance(m, ResidualBlock)]
