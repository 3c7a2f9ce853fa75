"""Efficient super-resolution for CPUs: RLFN."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medsr.models.blocks import (
    ESA,
    activation,
    autocast_input,
    check_scale,
    conv,
    default_out_channels,
    full_precision,
    pixel_shuffle,
)
from medsr.models.fused import conv_pointwise, conv_to_bf16
from medsr.models.registry import register_model


class RLFB(nn.Module):
    """Residual local feature block: three 3×3 conv + LeakyReLU(0.05) with a local skip, then a
    1×1 conv and enhanced spatial attention (ESA)."""

    def __init__(
        self, num_features: int, mid_features: int, esa_channels: int, esa_spread: str = "stretch"
    ):
        super().__init__()
        self.body = nn.Sequential(
            conv(num_features, mid_features, 3),
            activation("lrelu05"),
            conv(mid_features, mid_features, 3),
            activation("lrelu05"),
            conv(mid_features, num_features, 3),
            activation("lrelu05"),
        )
        self.c5 = conv(num_features, num_features, 1)
        self.esa = ESA(num_features, esa_channels, esa_spread)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.esa(self.c5(self._body(x) + x))

    def _body(self, x: torch.Tensor) -> torch.Tensor:
        """``self.body(x)``; in inference on the CPU each convolution with its LeakyReLU in one
        pass (:mod:`medsr.models.fused`)."""
        layers = list(self.body)
        y, i = x, 0
        while i < len(layers):
            act = layers[i + 1] if i + 1 < len(layers) else None
            if isinstance(act, nn.LeakyReLU):
                fused = conv_pointwise(layers[i], y, "leaky_relu", (act.negative_slope,))
                if fused is not None:
                    y, i = fused, i + 2
                    continue
            y, i = layers[i](y), i + 1
        return y


@register_model("rlfn")
class RLFN(nn.Module):
    """Residual local feature network, medsr's CPU default architecture.

    Kong, Li, Liu, Liu, He, Bai, Chen and Fu, "Residual Local Feature Network for Efficient
    Super-Resolution", CVPR Workshops (NTIRE) 2022 — winner of the NTIRE 2022 efficient SR
    challenge (runtime track).

    A 3×3 head conv, ``num_blocks`` residual local feature blocks (3 conv + LReLU with a local
    skip, 1×1 conv, ESA with ``esa_channels`` = 16), a 3×3 conv with a long skip and a one-step
    sub-pixel upsampler (conv → PixelShuffle(s), no activation; ×4 as one ×4 shuffle, as in the
    paper). Plain 3×3 convolutions and no large intermediate tensors keep it fast on CPUs.

    Defaults are the challenge model (``num_features`` = 46, ``num_blocks`` = 4; the challenge
    entry used ``mid_features=48`` inside the blocks, giving 0.317 M parameters at ×4 RGB;
    ``mid_features=None`` uses ``num_features``). The paper's RLFN is ``num_features=52,
    num_blocks=6``, RLFN-S ``num_features=48, num_blocks=6``. ``esa_channels=None`` gives
    ``min(16, num_features)``.

    ``global_residual=True`` (not in the paper; medsr's default models use it) adds the bicubic
    upsampling of the input to the output, so the network learns only the detail bicubic
    misses and training starts from bicubic quality instead of from zero. Such a network says so
    (``residual_base = "bicubic"``) and exposes that detail as :meth:`detail`, so inference can
    keep the base and the add in fp32 when the detail runs in bf16.

    ``esa_spread`` (:class:`medsr.models.blocks.ESA`): ``"stretch"`` is the paper's attention;
    ``"fixed"`` makes the network's output independent of the size of what it is given (a tile
    or crop starting on the 6-px grid gives the whole image's values away from its edges), which
    lets tiled inference match a whole-image pass (:attr:`tile_align`, :attr:`reach`).
    """

    learned = True
    residual_base: str | None

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int | None = None,
        num_features: int = 46,
        num_blocks: int = 4,
        scale: int = 2,
        mid_features: int | None = None,
        esa_channels: int | None = None,
        global_residual: bool = False,
        esa_spread: str = "stretch",
    ):
        super().__init__()
        self.scale = check_scale(scale)
        self.global_residual = bool(global_residual)
        self.residual_base = "bicubic" if self.global_residual else None
        self.in_channels = in_channels
        self.out_channels = default_out_channels(in_channels, out_channels)
        nf = num_features
        mid = mid_features if mid_features is not None else nf
        esa = esa_channels if esa_channels is not None else min(16, nf)
        # tiled inference (medsr.inference.tiling): a fixed-spread network gives a tile the
        # whole image's values beyond `reach` LR pixels of its cut edges when the tile starts on
        # the attention's grid; the stretched attention depends on the tile's size (no exact reach)
        self.tile_align = ESA.STRIDE if esa_spread == "fixed" else 1
        self.reach: int | None = 3 + num_blocks * (3 + ESA.REACH) if esa_spread == "fixed" else None
        self.head = conv(in_channels, nf, 3)
        self.blocks = nn.Sequential(*(RLFB(nf, mid, esa, esa_spread) for _ in range(num_blocks)))
        self.body_tail = conv(nf, nf, 3)
        self.upsample = nn.Sequential(
            conv(nf, self.out_channels * self.scale**2, 3), nn.PixelShuffle(self.scale)
        )
        if self.global_residual:  # start exactly at bicubic
            nn.init.zeros_(self.upsample[0].weight)
            nn.init.zeros_(self.upsample[0].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.detail(x)
        if self.global_residual:
            out = out + F.interpolate(
                x, scale_factor=self.scale, mode="bicubic", align_corners=False
            )
        return out

    def detail(
        self, x: torch.Tensor, up: torch.Tensor | None = None, *, fp32_blocks: int = 0
    ) -> torch.Tensor:
        """What the network adds: the whole output without ``global_residual``, else the residual
        ``forward(x) − bicubic(x)`` (``up``, the bicubic upsampling, is not needed here). The
        head reads the intensities in fp32 under autocast (:func:`full_precision`), and so do the
        first ``fp32_blocks`` blocks: they work on the head's features, which still carry the
        intensities at full magnitude (bf16 there moved ``default-x2``'s CT tissue values by up to
        10.6 HU, 3.9 HU with its first block in fp32: :mod:`medsr.inference.precision`)."""
        feats = None
        if not fp32_blocks and torch.is_autocast_enabled(x.device.type):
            # no block reads the head's features in fp32: they are made in bf16 directly, to
            # fp32's accuracy (medsr.models.fused.conv_to_bf16; None where it does not apply)
            if torch.get_autocast_dtype(x.device.type) == torch.bfloat16:
                feats = conv_to_bf16(self.head, x)
        if feats is None:
            feats = full_precision(self.head, x)
        # what the blocks in the autocast dtype read, cast once (the first block's input and the
        # long skip are the same features when no block runs in fp32)
        first = None if fp32_blocks else autocast_input(feats)
        body = feats
        for i, block in enumerate(self.blocks):
            if i < fp32_blocks:
                body = full_precision(block, body)
            else:
                body = block(first if i == 0 else autocast_input(body))
        # the long skip in the autocast dtype too: the upsampling convolution reads the sum in it
        # (an fp32 skip rounded the sum once where this rounds twice; a bf16 + fp32 add is a slow
        # path: fast-x2 at 512² on 2 Xeon cores, 4.3 + 1.2 ms for the add and the cast back)
        skip = first if first is not None else autocast_input(feats)
        skipped = conv_pointwise(self.body_tail, body, add=skip)
        if skipped is None:
            skipped = self.body_tail(body) + skip
        conv_up = self.upsample[0]
        return pixel_shuffle(conv_up(skipped), self.scale)

    def widened(self, multiple: int = 8) -> RLFN:
        """The same function with every feature width rounded up to ``multiple`` channels.

        The added channels have zero weights and biases in and out, so they stay exactly zero
        (LeakyReLU(0) = 0, and the attention multiplies them by its mask) and the output is the
        same up to the convolution algorithms' rounding. GPU tensor cores take channel counts in
        multiples of 8; 46 features (the default models) fall back to slower kernels there.
        Returns ``self`` when every width is already a multiple.
        """

        def up(n: int) -> int:
            return -(-n // multiple) * multiple

        nf = self.head.out_channels
        mid = self.blocks[0].body[0].out_channels if len(self.blocks) else nf
        esa = self.blocks[0].esa.conv1.out_channels if len(self.blocks) else min(16, nf)
        if (nf, mid, esa) == (up(nf), up(mid), up(esa)):
            return self
        spread = self.blocks[0].esa.spread_mode if len(self.blocks) else "stretch"
        wide = RLFN(
            in_channels=self.in_channels, out_channels=self.out_channels, num_features=up(nf),
            num_blocks=len(self.blocks), scale=self.scale, mid_features=up(mid), esa_channels=up(esa),
            global_residual=self.global_residual, esa_spread=spread,
        )  # fmt: skip
        wide.tile_align, wide.reach = self.tile_align, self.reach
        own = self.state_dict()
        with torch.no_grad():
            for name, p in wide.state_dict().items():
                p.zero_()
                src = own[name]
                p[tuple(slice(0, n) for n in src.shape)].copy_(src)
        ref = next(self.parameters())
        return wide.to(device=ref.device, dtype=ref.dtype).train(self.training)
