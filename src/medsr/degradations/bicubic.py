"""Bicubic downscaling (optionally after a Gaussian blur) and the self-supervision pyramid.

Physics / model: the generic "bicubic" SR degradation ``y = (k_σ ∗ x)↓f``: an optional isotropic
Gaussian blur ``k_σ`` (σ in **HR pixels**, a stand-in for the system's point-spread function)
followed by antialiased bicubic resampling onto the grid ``⌊H/f⌋ × ⌊W/f⌋``
(``torch.nn.functional.interpolate(mode="bicubic", antialias=True, align_corners=False)``: the
Keys cubic-convolution kernel with a = −0.5, stretched by ``f`` so it also low-pass filters; it
matches Pillow's ``BICUBIC`` resize; without antialias torch uses a = −0.75 and no stretch). References: R. Keys, "Cubic convolution interpolation for digital
image processing", IEEE Trans. ASSP 29(6):1153–1160, 1981; the antialiased-kernel convention
of Pillow / Matlab ``imresize``, the de-facto degradation of SR benchmarks (e.g. Lim et al.,
"Enhanced Deep Residual Networks for Single Image Super-Resolution", CVPRW 2017).

Size: the HR image is first cropped to a multiple of ``f`` by dropping trailing rows/columns
(voxel 0 stays put), so LR pixel ``j`` is centred on HR index ``f·j + (f − 1)/2`` exactly like
:meth:`medsr.image.MedImage.resampled` assumes.

:func:`downscale_pyramid` builds the HR → LR → very-LR chain used for zero-shot scale transfer
(Shocher et al., "Zero-Shot Super-Resolution using Deep Internal Learning", CVPR 2018): the
input plays the HR role, each level is the previous one blurred and downscaled by ``f``.
"""

from __future__ import annotations

import math

import torch

from medsr.degradations._common import (
    RandomDegradation,
    check_nonnegative,
    check_scale,
    check_tensor,
    crop_to_multiple,
    gaussian_blur,
)
from medsr.degradations._registry import register_degradation

__all__ = ["RandomBicubic", "bicubic_downscale", "downscale_pyramid", "pyramid_blur_sigma"]


def bicubic_downscale(
    x: torch.Tensor, scale: int, *, blur_sigma: float = 0.0, antialias: bool = True
) -> torch.Tensor:
    """Optional Gaussian blur (σ in HR pixels) then antialiased bicubic downscale by ``scale``.

    Args:
        x: ``(N, C, H, W)`` float tensor.
        scale: integer factor ``f`` ≥ 1; the output is ``(N, C, ⌊H/f⌋, ⌊W/f⌋)``.
        blur_sigma: standard deviation of the Gaussian pre-blur in HR pixels (0: none).
        antialias: stretch the bicubic kernel by ``f`` (low-pass) as Pillow/``imresize`` do.
    """
    x = check_tensor(x, (4,))
    f = check_scale(scale)
    sigma = check_nonnegative(blur_sigma, "blur_sigma")
    x = crop_to_multiple(x, f, (-2, -1))
    if sigma > 0:
        x = gaussian_blur(x, sigma, (-2, -1))
    if f == 1:
        return x
    h, w = x.shape[-2] // f, x.shape[-1] // f
    return torch.nn.functional.interpolate(
        x, size=(h, w), mode="bicubic", antialias=antialias, align_corners=False
    )


def pyramid_blur_sigma(scale: int) -> float:
    """σ = √(f² − 1)/2 HR pixels: the scale-space step that turns a pixel-sized PSF (σ ≈ ½ px)
    into one of ``f`` pixels (σ ≈ f/2), i.e. the blur consistent with an ``f``-fold coarser
    acquisition (T. Lindeberg, *Scale-Space Theory in Computer Vision*, 1994)."""
    f = check_scale(scale)
    return math.sqrt(f * f - 1) / 2.0


def downscale_pyramid(
    x: torch.Tensor, scale: int = 2, levels: int = 2, *, blur_sigma: float | None = None
) -> list[torch.Tensor]:
    """HR → LR → very-LR chain for self-supervised scale transfer.

    Returns ``[x₀, x₁, …, x_levels]`` where ``x₀`` is ``x`` cropped (trailing rows/columns) to a
    multiple of ``scale**levels`` and ``x_{k+1} = bicubic_downscale(x_k, scale, blur_sigma)``,
    so every level is exactly ``scale`` times smaller than the previous. ``blur_sigma``
    defaults to :func:`pyramid_blur_sigma` (≈ 0.87 HR px for ×2).
    """
    x = check_tensor(x, (4,))
    f = check_scale(scale)
    n = check_scale(levels, "levels")
    sigma = pyramid_blur_sigma(f) if blur_sigma is None else blur_sigma
    out = [crop_to_multiple(x, f**n, (-2, -1))]
    for _ in range(n):
        out.append(bicubic_downscale(out[-1], f, blur_sigma=sigma))
    return out


@register_degradation("bicubic")
class RandomBicubic(RandomDegradation):
    """Bicubic downscale with a random Gaussian pre-blur.

    Args:
        scale: integer factor.
        blur_sigma: σ of the pre-blur in HR pixels: a value, ``(low, high)`` or a list.
        antialias: see :func:`bicubic_downscale`.
    """

    function = staticmethod(bicubic_downscale)

    def __init__(
        self,
        scale: int = 2,
        blur_sigma=0.0,
        antialias: bool = True,
        *,
        per_sample: bool = True,
    ) -> None:
        super().__init__(scale, per_sample=per_sample, blur_sigma=blur_sigma, antialias=antialias)
