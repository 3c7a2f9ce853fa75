"""One-axis ("1-D") upsampling networks for through-plane super-resolution.

A thick-slice volume is coarse along z only, so the network that restores it must upsample
along **one** axis of a 2-D plane: a sagittal ``(Z, Y)`` or coronal ``(Z, X)`` reformat is
upsampled along its rows (z) and left alone along its columns. These models therefore do not
satisfy the zoo's ``(H·s, W·s)`` contract; they declare ``kind = "interpolator-1d"`` so
:func:`medsr.models.list_models` (which lists ``kind="upscaler"``) leaves them out of the
in-plane zoo, the CLI's ``--model`` list and the generic zoo test.

Forward takes ``(N, C, H, W)`` and returns ``(N, C, H·s, W)`` (``axis=-2``, default) or
``(N, C, H, W·s)`` (``axis=-1``), on medsr's cell-centred grid: output row ``i`` samples input
row ``(i + 0.5)/s − 0.5``, so the field of view is unchanged (see :meth:`MedImage.resampled`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medsr.models.blocks import ResidualBlock, conv, default_out_channels, residual_cnn
from medsr.models.registry import register_model


def cubic_upsample_axis(x: torch.Tensor, scale: int, axis: int = -2) -> torch.Tensor:
    """Cubic (Keys, a = −0.75) ×``scale`` along ``axis`` (−2: rows, −1: columns) only.

    Cell-centred like the registered ``bicubic`` model; along the other axis the size is kept,
    where torch's bicubic kernel sampled at integer offsets is the identity.
    """
    h, w = x.shape[-2:]
    size = (h * scale, w) if axis in (-2, 2) else (h, w * scale)
    if size == (h, w):
        return x
    return F.interpolate(x, size=size, mode="bicubic", align_corners=False)


class _AxialNet(nn.Module):
    """What every one-axis network shares: ``scale``, ``axis``, the channels (its output adds a
    residual to its input, so out_channels must equal in_channels), its kind and its repr."""

    kind = "interpolator-1d"
    learned = True
    scale: int
    axis: int
    in_channels: int
    out_channels: int

    def __init__(self, in_channels: int, out_channels: int | None, scale: int, axis: int):
        super().__init__()
        name = type(self).__name__
        if default_out_channels(in_channels, out_channels) != in_channels:
            raise ValueError(
                f"{name} adds a residual to its input, so out_channels must equal in_channels"
            )
        s = int(scale)
        if s != scale or s < 1:
            raise ValueError(f"scale must be a positive integer, got {scale!r}")
        if axis not in (-2, -1):
            raise ValueError(f"axis must be -2 (rows) or -1 (columns), got {axis!r}")
        self.scale = s
        self.axis = int(axis)
        self.in_channels = in_channels
        self.out_channels = in_channels

    def extra_repr(self) -> str:
        return f"scale={self.scale}, axis={self.axis}"


@register_model("residual5-1d")
class Residual5Axial(_AxialNet):
    """Cubic interpolation along one axis + a 5-layer residual CNN (through-plane SR, SMORE-like).

    The self-supervised through-plane network of SMORE — C. Zhao et al., "SMORE: a
    self-supervised anti-aliasing and super-resolution algorithm for MRI using deep learning",
    IEEE TMI 40(3):805–817, 2021 — learns, from in-plane slices of the volume itself whose one
    axis was degraded with the through-plane slice profile, to restore that axis, and is then
    applied to the sagittal and coronal reformats. SMORE uses an EDSR/WDSR body; this is the
    light ``residual5`` body (a short VDSR, Kim et al., CVPR 2016) on top of one-axis cubic
    interpolation, so that it can be fitted per volume on a CPU.

    Args:
        in_channels: input (and output) channels.
        out_channels: must equal ``in_channels`` (global residual over the interpolation).
        num_features: width of the hidden convolutions.
        num_blocks: number of 3×3 convolution layers (5).
        scale: integer factor along ``axis`` (1 = deblurring only, no new samples).
        axis: −2 (rows, default) or −1 (columns).
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int | None = None,
        num_features: int = 32,
        num_blocks: int = 5,
        scale: int = 2,
        axis: int = -2,
    ):
        super().__init__(in_channels, out_channels, scale, axis)
        self.body = residual_cnn(in_channels, in_channels, num_features, num_blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = cubic_upsample_axis(x, self.scale, self.axis)
        return up + self.body(up)


@register_model("edsr-1d")
class EDSRAxial(_AxialNet):
    """One-axis EDSR: residual blocks at the input resolution + a sub-pixel step along one axis.

    The through-plane **prior** (``tp-x2``/``tp-x4``): trained on many volumes' planes degraded
    along one axis with realistic slice profiles (``task: through-plane``), applied to the
    sagittal and coronal reformats of a thick-slice volume, and optionally adapted to one volume
    (:func:`medsr.selfsup.through_plane_upscale`, ``adapt_steps``).

    EDSR (B. Lim et al., "Enhanced deep residual networks for single image super-resolution",
    CVPR-W 2017) works at the low resolution and upsamples once at the end with a sub-pixel
    convolution (W. Shi et al., ESPCN, CVPR 2016); here the sub-pixel step is along ``axis``
    only — the tail predicts ``scale`` values per input row (or column) that become ``scale``
    output rows. The network's output is added to one-axis cubic interpolation (global
    residual), and the tail starts at zero, so an untrained network *is* cubic interpolation.
    Working at the input resolution costs ``1/scale`` of a network of the same width run on the
    interpolated plane (``residual5-1d``).

    Args:
        in_channels: input (and output) channels.
        out_channels: must equal ``in_channels``.
        num_features: width of the residual blocks.
        num_blocks: number of EDSR residual blocks.
        scale: integer factor along ``axis``.
        axis: −2 (rows, default) or −1 (columns).
        res_scale: EDSR residual scaling.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int | None = None,
        num_features: int = 32,
        num_blocks: int = 6,
        scale: int = 2,
        axis: int = -2,
        res_scale: float = 1.0,
    ):
        super().__init__(in_channels, out_channels, scale, axis)
        s = self.scale
        self.head = conv(in_channels, num_features)
        self.body = nn.Sequential(
            *[ResidualBlock(num_features, res_scale=res_scale) for _ in range(int(num_blocks))],
            conv(num_features, num_features),
        )
        self.tail = conv(num_features, in_channels * s)
        nn.init.zeros_(self.tail.weight)
        if self.tail.bias is not None:
            nn.init.zeros_(self.tail.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        s = self.scale
        up = cubic_upsample_axis(x, s, self.axis)
        feat = self.head(x)
        res = self.tail(feat + self.body(feat)).view(n, c, s, h, w)
        if self.axis == -2:  # channel k of row i -> output row i·s + k
            res = res.permute(0, 1, 3, 2, 4).reshape(n, c, h * s, w)
        else:
            res = res.permute(0, 1, 3, 4, 2).reshape(n, c, h, w * s)
        return up + res
