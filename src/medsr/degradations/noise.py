"""Noise models: additive Gaussian, Rician (MR magnitude) and Poisson (quantum counting).

Physics:

* **Gaussian** — thermal/electronic noise, additive and signal-independent:
  ``y = x + σ·n``, ``n ~ N(0, 1)``.
* **Rician** — an MR magnitude image is ``|s + n|`` where the complex signal ``s`` (taken real,
  = ``x``) receives independent Gaussian noise of standard deviation σ in its real and
  imaginary channels: ``y = sqrt((x + σ·n₁)² + (σ·n₂)²)``. The bias is ≈ σ²/(2x) at high SNR
  and the background becomes Rayleigh distributed (Gudbjartsson & Patz, "The Rician
  distribution of noisy MRI data", Magn. Reson. Med. 34:910–914, 1995).
* **Poisson** — photon (quantum) counting in X-ray detectors and nuclear medicine: an intensity
  ``x`` maps to an expected count ``λ = x·counts_per_unit``; ``y = Poisson(λ) / counts_per_unit``,
  so ``E[y] = x`` and ``Var[y] = x / counts_per_unit`` (Bushberg et al., *The Essential Physics
  of Medical Imaging*, 3rd ed., 2012, ch. 4 and 7). Negative intensities are clamped to 0.

All functions take batched tensors of any shape (N, C, H, W) or (N, C, D, H, W), and are
deterministic given a ``torch.Generator`` or integer seed (``None`` uses torch's global RNG).
"""

from __future__ import annotations

import torch

from medsr.degradations._common import (
    GeneratorLike,
    RandomDegradation,
    as_generator,
    check_nonnegative,
    poisson,
    randn_like,
)
from medsr.degradations._registry import register_degradation
from medsr.errors import InvalidParameterError

__all__ = [
    "RandomGaussianNoise",
    "RandomPoissonNoise",
    "RandomRicianNoise",
    "gaussian_noise",
    "poisson_noise",
    "rician_noise",
]


def gaussian_noise(x: torch.Tensor, sigma: float, generator: GeneratorLike = None) -> torch.Tensor:
    """``x + σ·N(0, 1)`` (σ in the units of ``x``)."""
    sigma = check_nonnegative(sigma, "sigma")
    if sigma == 0:
        return x
    return x + sigma * randn_like(x, as_generator(generator))


def rician_noise(x: torch.Tensor, sigma: float, generator: GeneratorLike = None) -> torch.Tensor:
    """Magnitude of ``x`` plus complex Gaussian noise of std σ per channel (Rician)."""
    sigma = check_nonnegative(sigma, "sigma")
    if sigma == 0:
        return x.abs()
    g = as_generator(generator)
    re = x + sigma * randn_like(x, g)
    im = sigma * randn_like(x, g)
    return torch.sqrt(re * re + im * im)


def poisson_noise(
    x: torch.Tensor, counts_per_unit: float, generator: GeneratorLike = None
) -> torch.Tensor:
    """``Poisson(max(x, 0)·c) / c``: quantum noise with ``c`` expected counts per unit intensity.

    ``Var[y] = x / c``: halving ``c`` (the dose) doubles the variance.
    """
    c = check_nonnegative(counts_per_unit, "counts_per_unit")
    if c == 0:
        raise InvalidParameterError("counts_per_unit (dose) must be > 0")
    rate = x.clamp_min(0) * c
    return poisson(rate, as_generator(generator)) / c


def _noise_fn(fn):
    def apply(x: torch.Tensor, scale: int, generator=None, **params) -> torch.Tensor:
        return fn(x, generator=generator, **params)

    apply.__doc__ = fn.__doc__
    return apply


@register_degradation("gaussian-noise")
class RandomGaussianNoise(RandomDegradation):
    """Additive Gaussian noise with σ sampled from a range (units of the input)."""

    function = staticmethod(_noise_fn(gaussian_noise))
    uses_generator = True

    def __init__(self, sigma=(0.0, 0.02), *, scale: int = 1, per_sample: bool = True) -> None:
        super().__init__(scale, per_sample=per_sample, sigma=sigma)


@register_degradation("rician-noise")
class RandomRicianNoise(RandomDegradation):
    """Rician (MR magnitude) noise with σ sampled from a range (units of the input)."""

    function = staticmethod(_noise_fn(rician_noise))
    uses_generator = True

    def __init__(self, sigma=(0.0, 0.02), *, scale: int = 1, per_sample: bool = True) -> None:
        super().__init__(scale, per_sample=per_sample, sigma=sigma)


@register_degradation("poisson-noise")
class RandomPoissonNoise(RandomDegradation):
    """Poisson noise; ``counts_per_unit`` is sampled log-uniformly from a range."""

    function = staticmethod(_noise_fn(poisson_noise))
    uses_generator = True
    log_params = frozenset({"counts_per_unit"})

    def __init__(
        self, counts_per_unit=(100.0, 10000.0), *, scale: int = 1, per_sample: bool = True
    ) -> None:
        super().__init__(scale, per_sample=per_sample, counts_per_unit=counts_per_unit)
