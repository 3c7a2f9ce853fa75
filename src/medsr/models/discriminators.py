"""Discriminators for adversarial training (not upscalers).

They are registered so ``create_model("patchgan")`` works, but carry ``kind = "discriminator"``
so :func:`~medsr.models.registry.list_models` (which lists upscalers by default) leaves them out.
Both offer ``features(x)``: the intermediate activations, used by the SRGAN content loss in
place of a pretrained VGG (nothing is downloaded at run time).
"""

from __future__ import annotations

import torch
from torch import nn

from medsr.models.blocks import activation
from medsr.models.registry import register_model


def _norm(kind: str, channels: int) -> nn.Module | None:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=False)
    if kind == "none":
        return None
    raise ValueError(f"norm must be 'batch', 'instance' or 'none', got {kind!r}")


class _Stage(nn.Sequential):
    """conv → [norm] → LeakyReLU(0.2)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, padding: int, norm: str):
        norm_layer = _norm(norm, cout)
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, kernel, stride, padding, bias=norm_layer is None)
        ]
        if norm_layer is not None:
            layers.append(norm_layer)
        layers.append(activation("lrelu"))
        super().__init__(*layers)


class _Discriminator(nn.Module):
    learned = True
    kind = "discriminator"
    stages: nn.ModuleList

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Activations after each conv stage (LeakyReLU outputs), shallow to deep."""
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


@register_model("srgan-discriminator")
class SRGANDiscriminator(_Discriminator):
    """The SRGAN discriminator, made fully convolutional.

    Ledig et al., "Photo-Realistic Single Image Super-Resolution Using a Generative Adversarial
    Network", CVPR 2017.

    Eight 3×3 conv layers with LeakyReLU(0.2): widths 64, 64, 128, 128, 256, 256, 512, 512
    (``num_features`` doubling every ``num_blocks`` = 4 pairs, capped at 8×), stride 2 on every
    second layer, BatchNorm on all but the first. The paper then flattens a 96×96 patch into a
    dense layer of 1024 units; here a global average pool makes any patch size work, and the two
    dense layers (1024 units, LeakyReLU, 1 unit) are 1×1 convolutions. ``forward`` returns raw
    logits of shape ``(N, 1)`` (use ``BCEWithLogitsLoss``; the paper's sigmoid is in the loss).
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_features: int = 64,
        num_blocks: int = 4,
        dense_features: int = 1024,
        norm: str = "batch",
    ):
        super().__init__()
        self.in_channels = in_channels
        stages: list[nn.Module] = []
        cin = in_channels
        for i in range(num_blocks):
            width = num_features * min(2**i, 8)
            stages.append(_Stage(cin, width, 3, 1, 1, "none" if i == 0 else norm))
            stages.append(_Stage(width, width, 3, 2, 1, norm))
            cin = width
        self.stages = nn.ModuleList(stages)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(cin, dense_features, 1),
            activation("lrelu"),
            nn.Conv2d(dense_features, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x)
        return self.head(x).flatten(1)


@register_model("patchgan")
class PatchGANDiscriminator(_Discriminator):
    """PatchGAN ("N-layer") discriminator: one real/fake logit per overlapping patch.

    Isola, Zhu, Zhou and Efros, "Image-to-Image Translation with Conditional Adversarial
    Networks" (pix2pix), CVPR 2017.

    4×4 convs with LeakyReLU(0.2): ``num_blocks`` = n_layers (3) stride-2 convs with widths
    ``num_features`` (64) doubling up to 8× (no norm on the first), one stride-1 conv, then a
    stride-1 conv to one channel. With the defaults each output logit sees a 70×70 input patch.
    ``forward`` returns the ``(N, 1, h, w)`` logit map; inputs need to be at least about
    ``2**(n_layers+2)`` pixels (32 for the default). ``norm`` is ``"batch"`` (pix2pix),
    ``"instance"`` (CycleGAN) or ``"none"``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_features: int = 64,
        num_blocks: int = 3,
        norm: str = "batch",
    ):
        super().__init__()
        self.in_channels = in_channels
        nf = num_features
        stages: list[nn.Module] = [_Stage(in_channels, nf, 4, 2, 1, "none")]
        width = nf
        for n in range(1, num_blocks):
            nxt = nf * min(2**n, 8)
            stages.append(_Stage(width, nxt, 4, 2, 1, norm))
            width = nxt
        nxt = nf * min(2**num_blocks, 8)
        stages.append(_Stage(width, nxt, 4, 1, 1, norm))
        self.stages = nn.ModuleList(stages)
        self.head = nn.Conv2d(nxt, 1, 4, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x)
        return self.head(x)
