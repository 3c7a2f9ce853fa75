"""Building blocks shared by the learned architectures.

Every architecture file composes these instead of re-implementing them: ``conv`` (a
size-preserving convolution), ``activation``, ``ResidualBlock`` (SRResNet/EDSR), ``DenseBlock``
(SRDenseNet), ``ResidualDenseBlock`` (RDN), ``Upsampler`` (sub-pixel convolution at ×2/×3/×4),
``DeconvUpsampler`` (transposed convolutions, SRDenseNet), ``ESA`` (enhanced spatial attention,
RLFN) and ``bicubic_upsample`` (the pre-upsampling of SRCNN/VDSR, same convention as the
registered ``bicubic`` interpolator); ``full_precision`` runs a layer in fp32 under autocast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medsr.models.fused import conv_pointwise, folded


def conv(
    in_channels: int,
    out_channels: int,
    kernel_size: int = 3,
    *,
    stride: int = 1,
    bias: bool = True,
) -> nn.Conv2d:
    """A convolution with ``kernel_size // 2`` zero padding (keeps the size for stride 1)."""
    return nn.Conv2d(
        in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=bias
    )


def full_precision(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` in fp32 even under autocast (outside autocast: plain ``layer(x)``).

    For the layer that reads image intensities (and one that writes them): bf16 keeps 8
    significant bits, so a normalised CT value near 1,000 HU would be rounded in steps of up to
    8 HU before the network saw it — most of what bf16 changed in CT outputs, amplified by the
    network's sharpening (``benchmarks/results/precision.md``). On a GPU it also runs without
    TF32. Such a layer is a small part of a network's FLOPs.
    """
    if not torch.is_autocast_enabled(x.device.type):
        return layer(x)
    with torch.autocast(x.device.type, enabled=False):
        if x.device.type != "cuda":
            return layer(x.float())
        cudnn = torch.backends.cudnn  # nor TF32 (10 significant bits) on a GPU
        with cudnn.flags(enabled=cudnn.enabled, benchmark=cudnn.benchmark, deterministic=cudnn.deterministic,
                         allow_tf32=False):  # fmt: skip
            return layer(x.float())


def autocast_input(x: torch.Tensor) -> torch.Tensor:
    """``x`` in the autocast dtype of its device when autocast is on there and ``x`` is fp32 — as
    autocast casts a convolution's input — else ``x`` itself. For a tensor that several
    low-precision layers read, or that joins their outputs in a sum: cast once, and no sum of a
    bf16 and an fp32 tensor (PyTorch's mixed-dtype elementwise path is 3–4× slower on the CPU
    than the same sum in one dtype)."""
    device = x.device.type
    if x.dtype != torch.float32 or not torch.is_autocast_enabled(device):
        return x
    return x.to(torch.get_autocast_dtype(device))


def activation(name: str) -> nn.Module:
    """``relu``, ``prelu`` (one shared slope, as in SRResNet), ``lrelu`` (0.2, discriminators) or
    ``lrelu05`` (0.05, RLFN)."""
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "prelu":
        return nn.PReLU(num_parameters=1, init=0.25)
    if name == "lrelu":
        return nn.LeakyReLU(0.2, inplace=True)
    if name == "lrelu05":
        return nn.LeakyReLU(0.05, inplace=True)
    raise ValueError(f"unknown activation {name!r}")


def bicubic_upsample(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Bicubic ×``scale`` on medsr's cell-centred grid (the registered ``bicubic`` model)."""
    return F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)


def check_scale(scale: int) -> int:
    """Validate an integer upscaling factor supported by the sub-pixel upsamplers."""
    s = int(scale)
    if s != scale or s < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    if s not in (1, 3) and s & (s - 1):
        raise ValueError(f"scale must be 3 or a power of two (2, 4, 8, ...), got {scale}")
    return s


def scale_stages(scale: int) -> list[int]:
    """Factor ``scale`` into the stages of a progressive upsampler: 3 → [3], 4 → [2, 2]."""
    s = check_scale(scale)
    if s == 1:
        return []
    if s == 3:
        return [3]
    return [2] * (s.bit_length() - 1)


def default_out_channels(in_channels: int, out_channels: int | None) -> int:
    return in_channels if out_channels is None else int(out_channels)


def residual_cnn(
    in_channels: int, out_channels: int, num_features: int, num_layers: int
) -> nn.Sequential:
    """``num_layers`` 3×3 convolutions, ReLU after all but the last (VDSR/ZSSR body)."""
    if num_layers < 1:
        raise ValueError("need at least one convolution layer")
    layers: list[nn.Module] = []
    width = in_channels
    for _ in range(num_layers - 1):
        layers += [conv(width, num_features, 3), nn.ReLU(inplace=True)]
        width = num_features
    layers.append(conv(width, out_channels, 3))
    return nn.Sequential(*layers)


class BicubicResidualNet(nn.Module):
    """Base of VDSR and residual5: ``bicubic(x) + body(bicubic(x))`` (global residual learning).

    ``residual_base = "bicubic"`` and :meth:`detail` tell inference that the output is a bicubic
    base plus a learned residual, so the base and the add can stay in fp32 when the residual
    runs in bf16 (:mod:`medsr.inference.planes`).
    """

    learned = True
    residual_base: str | None = "bicubic"

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None,
        num_features: int,
        num_layers: int,
        scale: int,
    ):
        super().__init__()
        if out_channels is not None and out_channels != in_channels:
            raise ValueError(
                f"{type(self).__name__} adds a residual to the bicubic input, so out_channels must equal in_channels"
            )
        self.scale = check_scale(scale)
        self.in_channels = in_channels
        self.out_channels = in_channels
        self.body = residual_cnn(in_channels, in_channels, num_features, num_layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = bicubic_upsample(x, self.scale)
        return up + self.detail(x, up)

    def detail(self, x: torch.Tensor, up: torch.Tensor | None = None) -> torch.Tensor:
        """The learned residual ``forward(x) − bicubic(x)`` (``up``: ``bicubic(x)``, when known);
        its first layer reads the intensities in fp32 (:func:`full_precision`)."""
        up = bicubic_upsample(x, self.scale) if up is None else up
        return self.body[1:](full_precision(self.body[0], up))

    def feature_layers(self) -> list[nn.Module]:
        """Modules whose outputs are the intermediate features (the ReLUs), shallow to deep."""
        return [m for m in self.body if isinstance(m, nn.ReLU)]


class ResidualBlock(nn.Module):
    """``x + res_scale · conv(act(conv(x)))``, optionally with BatchNorm after each conv.

    With ``batch_norm=True, act="prelu"`` it is the SRResNet block (Ledig et al. 2017); with
    ``batch_norm=False, act="relu"`` the EDSR block (Lim et al. 2017), whose ``res_scale``
    (0.1 in the large EDSR) stabilises training of wide networks.
    """

    def __init__(
        self,
        num_features: int,
        *,
        kernel_size: int = 3,
        batch_norm: bool = False,
        act: str = "relu",
        res_scale: float = 1.0,
    ):
        super().__init__()
        layers: list[nn.Module] = [
            conv(num_features, num_features, kernel_size, bias=not batch_norm)
        ]
        if batch_norm:
            layers.append(nn.BatchNorm2d(num_features))
        layers.append(activation(act))
        layers.append(conv(num_features, num_features, kernel_size, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm2d(num_features))
        self.body = nn.Sequential(*layers)
        self.res_scale = float(res_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = self.body(x)
        if self.res_scale != 1.0:
            res = res * self.res_scale
        return x + res


class DenseBlock(nn.Module):
    """SRDenseNet dense block (Tong et al. 2017).

    ``num_layers`` 3×3 conv + ReLU layers; layer ``i`` sees the concatenation of the outputs of
    all previous layers of the block, and the block returns that concatenation
    (``num_layers · growth`` channels). The first layer maps the block input to ``growth``.
    """

    def __init__(self, in_channels: int, growth: int, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(
            conv(in_channels if i == 0 else growth * i, growth, 3) for i in range(num_layers)
        )
        self.out_channels = growth * num_layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = F.relu(self.layers[0](x))
        for layer in self.layers[1:]:
            feats = torch.cat([feats, F.relu(layer(feats))], dim=1)
        return feats


class ResidualDenseBlock(nn.Module):
    """RDN residual dense block (Zhang et al. 2018).

    ``num_layers`` (C) 3×3 conv + ReLU layers with growth ``growth`` (G), contiguous memory
    (layer ``c`` sees ``G0 + c·G`` channels), local feature fusion (1×1 conv back to ``G0``)
    and local residual learning (``x +``).
    """

    def __init__(self, num_features: int, growth: int, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(
            conv(num_features + i * growth, growth, 3) for i in range(num_layers)
        )
        self.fusion = conv(num_features + num_layers * growth, num_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = x
        for layer in self.layers:
            feats = torch.cat([feats, F.relu(layer(feats))], dim=1)
        return x + self.fusion(feats)


class Upsampler(nn.Sequential):
    """Sub-pixel convolution upsampler (Shi et al., ESPCN, CVPR 2016).

    Each stage is ``conv(num_features → out · r²) → PixelShuffle(r)`` (+ optional activation);
    ×2 and ×3 are one stage, ×4 (×8) two (three) ×2 stages, as in SRResNet, EDSR and RDN.
    ``out_features`` sets the width after the last stage (default ``num_features``).
    """

    def __init__(
        self,
        scale: int,
        num_features: int,
        *,
        out_features: int | None = None,
        act: str | None = None,
        kernel_size: int = 3,
    ):
        layers: list[nn.Module] = []
        stages = scale_stages(scale)
        for i, r in enumerate(stages):
            last = i == len(stages) - 1
            width = out_features if (last and out_features is not None) else num_features
            layers += [conv(num_features, width * r * r, kernel_size), nn.PixelShuffle(r)]
            if act is not None:
                layers.append(activation(act))
        super().__init__(*layers)


class DeconvUpsampler(nn.Sequential):
    """Transposed-convolution upsampler (SRDenseNet): one 3×3 deconvolution + ReLU per stage.

    ×2 stages use ``stride 2, padding 1, output_padding 1``; ×3 uses ``stride 3, padding 0``,
    so the output is exactly ``r·H × r·W``.
    """

    def __init__(self, scale: int, in_features: int, num_features: int):
        layers: list[nn.Module] = []
        width = in_features
        for r in scale_stages(scale):
            pad, out_pad = (1, 1) if r == 2 else (0, 0)
            layers += [
                nn.ConvTranspose2d(
                    width, num_features, 3, stride=r, padding=pad, output_padding=out_pad
                ),
                nn.ReLU(inplace=True),
            ]
            width = num_features
        super().__init__(*layers)


def pixel_shuffle(x: torch.Tensor, factor: int) -> torch.Tensor:
    """``F.pixel_shuffle(x, factor)``, the same values; for a channels-last ``x`` as one copy
    of a permuted view, which PyTorch's channels-last kernel is not (RLFN's last step at 512²,
    4 → 1 channels in bf16 on 2 Xeon cores: 0.37 ms against 1.6)."""
    if x.dim() != 4 or not x.is_contiguous(memory_format=torch.channels_last) or x.shape[1] == 1:
        return F.pixel_shuffle(x, factor)
    n, c, h, w = x.shape
    out = c // (factor * factor)
    if out * factor * factor != c:
        return F.pixel_shuffle(x, factor)  # its own error message
    # channels-last memory is (n, h, w, c) with c = (out, row phase, column phase)
    cells = x.permute(0, 2, 3, 1).reshape(n, h, w, out, factor, factor)
    return cells.permute(0, 3, 1, 4, 2, 5).reshape(n, out, h * factor, w * factor)


def bilinear_upsample(
    x: torch.Tensor, factor: int, size: tuple[int, int] | None = None
) -> torch.Tensor:
    """``F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)`` for an
    integer ``factor``, in ``x``'s dtype; with ``size``, that result cropped or edge-extended
    (its last row and column repeated) to ``size``.

    In inference on the CPU it runs as what it is, one depthwise transposed convolution: each
    input pixel spreads over ``2·factor`` output pixels per axis with the tent weights
    ``1 − |(t − c + ½)/factor − ½|`` (``c = factor // 2``), the input edge-replicated by one
    pixel first (interpolate clamps its sampling positions to the edge) and the result cropped;
    in fp32 whatever ``x``'s dtype. On 2 Xeon cores, 16 × 85² → 510² (fast-x2's attention at
    512²): 0.8 ms (+ the cast back to bf16) against interpolate's 3.9 ms in bf16 and 2.2 in fp32,
    and 3.6 through :mod:`medsr.models.classical`'s polyphase upscaler with tent taps (fast for
    its 1-channel planes, but here 16 channels × 6 phases of small operations).
    The same values up to fp32 rounding (interpolate rounds its sampling positions: up to 4e-5
    of the values at 510 pixels). Elsewhere (autograd, GPUs, ``torch.compile``) it calls
    interpolate.
    """
    if (
        torch.is_grad_enabled()
        or x.device.type != "cpu"
        or x.dim() != 4
        or torch.compiler.is_compiling()
    ):
        up = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
        if size is None:
            return up
        ph, pw = max(0, size[0] - up.shape[-2]), max(0, size[1] - up.shape[-1])
        if ph or pw:
            up = F.pad(up, (0, pw, 0, ph), mode="replicate")
        return up[..., : size[0], : size[1]]
    _, c, h, w = x.shape
    oh, ow = size if size is not None else (h * factor, w * factor)
    taps, centre = 2 * factor - factor % 2, factor // 2
    t = torch.arange(taps, dtype=torch.float64)
    tent = torch.clamp(1 - ((t - centre + 0.5) / factor - 0.5).abs(), min=0)
    kernel = (tent[:, None] * tent[None, :]).float().expand(c, 1, taps, taps).contiguous()
    # past the last input sample the interpolation between replicated edge values is that value:
    # an output larger than h·factor is the upsampling of an input replicated further, cropped
    # and cast in one copy (no padding of the full-size output)
    eh, ew = -(-max(0, oh - h * factor) // factor), -(-max(0, ow - w * factor) // factor)
    padded = F.pad(x.float(), (1, 1 + ew, 1, 1 + eh), mode="replicate")
    y = F.conv_transpose2d(padded, kernel, stride=factor, groups=c)
    o = factor + centre
    return y[..., o : o + oh, o : o + ow].to(x.dtype)


def _masked(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x · mask`` for an attention ``mask`` of this call's own (in place when the dtypes agree)."""
    return mask.mul_(x) if mask.dtype == x.dtype else x * mask


class ESA(nn.Module):
    """Enhanced spatial attention, the light form used by RLFN.

    Liu et al., "Residual Feature Aggregation Network for Image Super-Resolution", CVPR 2020;
    RLFN (Kong et al. 2022) drops its ``conv_max``/``conv3_`` layers. A 1×1 reduction to
    ``esa_channels``, a strided 3×3 conv and a 7×7/stride-3 max pool give a coarse map; a 3×3 conv,
    bilinear upsampling, a skip from the reduction, a 1×1 expansion and a sigmoid give the mask
    that multiplies the input. All large convs run at 1/6 resolution, so it is cheap.

    For inputs smaller than the pooling window (tiny tiles, tests) the window shrinks to fit.

    ``spread`` says how the coarse map returns to the input's grid: ``"stretch"`` (RLFN's
    bilinear resize to the input's size: the map's geometry depends on that size, so a tile or a
    crop gives slightly different values than the whole image) or ``"fixed"`` (bilinear by the
    pooling stride, 6, then cropped or edge-extended: the same geometry at every size, so the
    block commutes with shifts by multiples of 6 away from the borders).
    """

    #: the coarse map's stride in input pixels (stride-2 conv, stride-3 pool)
    STRIDE = 6
    #: how far (input pixels) the fixed-spread block looks: an output pixel x reads the coarse
    #: samples around (x + 0.5)/6 − 0.5 and their 3×3 neighbours, each pooled over 15 pixels from
    #: 6·j: x − 15 … x + 24
    REACH = 24
    SPREADS = ("stretch", "fixed")

    def __init__(self, num_features: int, esa_channels: int = 16, spread: str = "stretch"):
        super().__init__()
        if spread not in self.SPREADS:
            raise ValueError(f"ESA spread must be one of {self.SPREADS}, got {spread!r}")
        self.spread_mode = spread
        f = esa_channels
        self.conv1 = nn.Conv2d(num_features, f, 1)
        self.conv_f = nn.Conv2d(f, f, 1)
        self.conv2 = nn.Conv2d(f, f, 3, stride=2, padding=0)
        self.conv3 = nn.Conv2d(f, f, 3, padding=1)
        self.conv4 = nn.Conv2d(f, num_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fast = self._folded(x)
        if fast is not None:
            return fast
        c1_ = self.conv1(x)
        h, w = c1_.shape[-2:]
        small = c1_
        if h < 3 or w < 3:
            small = F.pad(c1_, (0, max(0, 3 - w), 0, max(0, 3 - h)), mode="replicate")
        c1 = self.conv2(small)
        c3 = self._coarse(c1, (h, w))
        # one dtype here: the spread keeps the coarse map's (see spread). In inference on the CPU
        # the skip's add and the sigmoid run inside their convolutions (medsr.models.fused)
        skip = conv_pointwise(self.conv_f, c1_, add=c3)
        if skip is None:
            skip = self.conv_f(c1_).add_(c3)
        mask = conv_pointwise(self.conv4, skip, "sigmoid")
        if mask is not None:
            return _masked(x, mask)
        logits = self.conv4(skip)
        if logits.dtype != x.dtype or (
            torch.is_grad_enabled() and (x.requires_grad or logits.requires_grad)
        ):
            return x * torch.sigmoid(logits)
        # inference: the mask in place, no second full-size tensor (the same values; default-x2
        # on a 2-core CPU at 512², ~10 % of the network's time)
        return logits.sigmoid_().mul_(x)

    def _folded(self, x: torch.Tensor) -> torch.Tensor | None:
        """:meth:`forward` in inference on the CPU (:mod:`medsr.models.fused`): the 1×1 reduction
        ``conv1`` folded into the two convolutions that read it (``conv2``, ``conv_f``), so that
        it is never made at full size; the skip's add and the sigmoid inside their convolutions.
        ``None`` where that does not apply (the caller runs the modules)."""
        h, w = x.shape[-2:]
        if h < 3 or w < 3:  # the modules pad such a small map first
            return None
        down = folded(self.conv1, self.conv2, x)
        side = folded(self.conv1, self.conv_f, x)
        if down is None or side is None:
            return None
        c1 = conv_pointwise(down, x)
        if c1 is None:
            return None
        skip = conv_pointwise(side, x, add=self._coarse(c1, (h, w)))
        mask = conv_pointwise(self.conv4, skip, "sigmoid") if skip is not None else None
        return None if mask is None else _masked(x, mask)

    def _coarse(self, c1: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """The coarse map from the strided reduction ``c1``: the 7×7/3 max pool (shrunk to fit
        a small map), ``conv3``, spread back onto the input's grid of ``size``."""
        kh, kw = min(7, c1.shape[-2]), min(7, c1.shape[-1])
        v_max = F.max_pool2d(c1, kernel_size=(kh, kw), stride=(min(3, kh), min(3, kw)))
        return self.spread(self.conv3(v_max), size)

    def spread(self, coarse: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """The coarse map back on the input's grid of ``size`` (see ``spread`` in the class)."""
        if self.spread_mode == "stretch":
            return F.interpolate(coarse, size, mode="bilinear", align_corners=False)
        # returned in the map's own dtype: under CPU autocast the replicate padding would run in
        # fp32, and the full-size add in forward would mix bf16 and fp32, a slow path (fast-x2 bf16
        # at 512²: 211 → 166 ms without it, the same values); the upsampling itself runs in fp32
        # in inference on the CPU (bilinear_upsample)
        with torch.autocast(coarse.device.type, enabled=False):
            return bilinear_upsample(coarse, self.STRIDE, size)
