"""Ultrasound lateral resolution loss: beam-width blur and fewer beam lines, axial untouched.

Physics: a B-mode image is built from beam lines (A-lines) side by side along the lateral axis.
Axial resolution (along each line, depth) is set by the pulse length and is much finer than the
lateral resolution, which is set by the beam width at the focus (≈ λ·F-number) and by the
line density. A scanner with a wider beam / fewer lines therefore produces an image blurred by
the lateral beam profile (≈ Gaussian) and sampled on ``f`` times fewer lines, while every line
keeps its full axial sampling, so the speckle pattern along depth is preserved. References:
T. L. Szabo, *Diagnostic Ultrasound Imaging: Inside Out*, 2nd ed., Academic Press 2014,
ch. 6–7 (beam formation, lateral resolution); J. A. Jensen, "A model for the propagation and
scattering of ultrasound in tissue", JASA 89:182, 1991 (separable PSF model).

Conventions: the lateral axis is the last one (x, columns) of ``(N, C, H, W)``; the axial axis
(y, rows = depth) is never filtered. ``lateral_sigma`` is the σ of the lateral PSF in HR pixels
(cell-integrated Gaussian). Line ``j`` of the output is centred on HR column ``f·j + (f−1)/2``
(cell-centred, trailing columns beyond a multiple of ``f`` dropped). ``scale=1`` only blurs.
"""

from __future__ import annotations

import torch

from medsr.degradations._common import (
    RandomDegradation,
    check_nonnegative,
    check_scale,
    check_tensor,
    crop_to_multiple,
    filter_axis,
    normalize_axis,
)
from medsr.degradations._registry import register_degradation
from medsr.errors import InvalidParameterError

__all__ = ["RandomUltrasound", "ultrasound_lateral"]


def ultrasound_lateral(
    x: torch.Tensor, scale: int, *, lateral_sigma: float | None = None, axis: int = -1
) -> torch.Tensor:
    """Lateral beam blur (Gaussian, σ in HR pixels) and decimation by ``scale`` along ``axis``.

    Args:
        x: ``(N, C, H, W)`` B-mode image, lateral axis last.
        scale: integer factor; output ``(N, C, H, ⌊W/f⌋)``.
        lateral_sigma: σ of the lateral PSF in HR pixels (default ``f/2``: a beam about as wide
            as the new line spacing; 0 = pick lines without blur).
        axis: the lateral axis (−1 by default; −2 for images stored transposed).
    """
    x = check_tensor(x, (4,))
    f = check_scale(scale)
    ax = normalize_axis(axis, x.ndim)
    if ax < 2:
        raise InvalidParameterError(f"axis {axis} is the batch or channel axis, not a spatial one")
    sigma = f / 2.0 if lateral_sigma is None else check_nonnegative(lateral_sigma, "lateral_sigma")
    x = crop_to_multiple(x, f, (ax,))
    return filter_axis(x, ax, f, profile="gaussian", width=sigma)


@register_degradation("ultrasound")
class RandomUltrasound(RandomDegradation):
    """Lateral-only ultrasound degradation with a random beam width.

    Args:
        scale: integer factor along the lateral axis (1: blur only).
        lateral_sigma: ``None`` (= scale/2), a value or ``(low, high)`` in HR pixels.
        axis: lateral axis.
    """

    function = staticmethod(ultrasound_lateral)

    def __init__(
        self, scale: int = 2, lateral_sigma=None, axis: int = -1, *, per_sample: bool = True
    ) -> None:
        super().__init__(scale, per_sample=per_sample, lateral_sigma=lateral_sigma, axis=axis)
