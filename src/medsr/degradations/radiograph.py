"""Projection radiography (CR/DX/MG/XA): detector blur, larger detector elements, quantum noise.

Physics: in an X-ray detector the light (indirect) or charge (direct conversion) spreads before
it is collected — a roughly Gaussian point-spread function — and each detector element then
integrates over its square aperture; a detector with ``f`` times larger pixel pitch integrates
``f × f`` HR cells. The number of X-ray quanta a pixel records is Poisson distributed
(quantum mottle), so the relative noise grows as the dose falls: ``Var[y] = E[y] / dose``.
References: J. T. Bushberg et al., *The Essential Physics of Medical Imaging*, 3rd ed., 2012,
ch. 4 (image quality, MTF, quantum noise) and ch. 7 (radiography detectors); I. A. Cunningham,
"Applied linear-systems theory", in *Handbook of Medical Imaging* vol. 1, SPIE 2000.

Conventions: ``sigma`` is the σ of the detector PSF in HR pixels (cell-integrated Gaussian);
downsampling is the mean over ``f × f`` blocks (the detector aperture), LR pixel ``j`` centred on
HR ``f·j + (f−1)/2`` (HR cropped to a multiple of ``f`` by dropping trailing rows/columns).
``dose`` is the expected number of quanta an **LR pixel** records at intensity 1.0 (intensities
are taken as proportional to the detected fluence, negative values clamped to 0); ``None``
means noise-free.
"""

from __future__ import annotations

import torch

from medsr.degradations._common import (
    GeneratorLike,
    RandomDegradation,
    block_mean,
    check_nonnegative,
    check_scale,
    check_tensor,
    crop_to_multiple,
    gaussian_blur,
)
from medsr.degradations._registry import register_degradation
from medsr.degradations.noise import poisson_noise

__all__ = ["RandomRadiograph", "radiograph"]


def radiograph(
    x: torch.Tensor,
    scale: int,
    *,
    sigma: float = 0.5,
    dose: float | None = None,
    generator: GeneratorLike = None,
) -> torch.Tensor:
    """Detector PSF blur, ``f × f`` aperture binning and Poisson quantum noise.

    Args:
        x: ``(N, C, H, W)`` intensities proportional to detected fluence.
        scale: integer factor; output ``(N, C, ⌊H/f⌋, ⌊W/f⌋)``.
        sigma: detector PSF σ in HR pixels (0: none).
        dose: expected quanta per LR pixel at intensity 1 (``None``: no noise).
        generator: torch.Generator or seed for the noise.
    """
    x = check_tensor(x, (4,))
    f = check_scale(scale)
    sigma = check_nonnegative(sigma, "sigma")
    x = crop_to_multiple(x, f, (-2, -1))
    x = gaussian_blur(x, sigma, (-2, -1))
    x = block_mean(x, f, (-2, -1))
    if dose is not None:
        x = poisson_noise(x, dose, generator)
    return x


@register_degradation("radiograph")
class RandomRadiograph(RandomDegradation):
    """Radiograph degradation with random PSF width and dose (dose drawn log-uniformly).

    Args:
        scale: integer factor.
        sigma: PSF σ in HR pixels: value or ``(low, high)``.
        dose: ``None``, a value or ``(low, high)`` quanta per LR pixel at intensity 1.
    """

    function = staticmethod(radiograph)
    uses_generator = True
    log_params = frozenset({"dose"})

    def __init__(self, scale: int = 2, sigma=0.5, dose=None, *, per_sample: bool = True) -> None:
        super().__init__(scale, per_sample=per_sample, sigma=sigma, dose=dose)
