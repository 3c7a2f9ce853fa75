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
* **CT** — quantum noise in the projections becomes, after filtered back-projection, additive
  Gaussian noise in the image whose noise-power spectrum is the ramp filter times the squared
  apodisation window: ``NPS(f) ∝ |f|·W(f)²`` (zero at DC, a mid-frequency peak), so CT noise
  is spatially correlated ("grainy"), not white (Hanson, "Detectability in computed
  tomographic images", Med. Phys. 6:441, 1979; Kijewski & Judy, "The noise power spectrum of
  CT images", Phys. Med. Biol. 32:565, 1987). :func:`ct_noise` uses a Gaussian window,
  ``NPS(f) ∝ f·exp(−f²/f_c²)`` with its peak at ``nps_peak = f_c/√2`` cycles/pixel (default
  :data:`CT_NPS_PEAK`, a standard soft-tissue kernel), scaled so the pixel standard deviation
  is σ (``nps_peak=None``: white noise, which is not what a CT scanner makes).

:class:`RandomScannerNoise` picks the model of a modality group (MR → Rician, CT → correlated
Gaussian, radiographs → Poisson) for noising *high-resolution training targets*: the same
realisation then appears at full resolution in the target and, after the degradation, in the
input (see ``degradation.hr_noise`` in :mod:`medsr.training.config`).

All functions take batched tensors of any shape (N, C, H, W) or (N, C, D, H, W), and are
deterministic given a ``torch.Generator`` or integer seed (``None`` uses torch's global RNG).
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch

from medsr.degradations._common import (
    GeneratorLike,
    RandomDegradation,
    _uniform,
    as_generator,
    check_nonnegative,
    poisson,
    randn_like,
    sample_value,
)
from medsr.degradations._registry import register_degradation
from medsr.errors import InvalidParameterError

__all__ = [
    "CT_NPS_PEAK",
    "SCANNER_NOISE_GROUPS",
    "RandomCTNoise",
    "RandomGaussianNoise",
    "RandomPoissonNoise",
    "RandomRicianNoise",
    "RandomScannerNoise",
    "ct_noise",
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


def _nps_amplitude(h: int, w: int, nps_peak: float, device: Any) -> tuple[torch.Tensor, float]:
    """``sqrt(NPS)`` on the ``rfft2`` grid of an ``h × w`` image and the white-noise → pixel
    variance factor (mean of the NPS over the full spectrum, Parseval)."""
    fc = math.sqrt(2.0) * float(nps_peak)
    fy = torch.fft.fftfreq(h, device=device, dtype=torch.float64)[:, None]
    fx_full = torch.fft.fftfreq(w, device=device, dtype=torch.float64)[None, :]
    fx = torch.fft.rfftfreq(w, device=device, dtype=torch.float64)[None, :]

    def nps(fxx: torch.Tensor) -> torch.Tensor:
        f = torch.sqrt(fy * fy + fxx * fxx)
        return f * torch.exp(-((f / fc) ** 2))

    var = float(nps(fx_full).mean())
    return nps(fx).sqrt(), var


#: default NPS peak of :func:`ct_noise`, cycles/pixel: the middle of the range of typical CT
#: kernels (0.1–0.35; a soft-tissue kernel's ≈ 0.3 mm⁻¹ on 0.7 mm pixels is ≈ 0.2)
CT_NPS_PEAK = 0.2


def ct_noise(
    x: torch.Tensor,
    sigma: float,
    nps_peak: float | None = CT_NPS_PEAK,
    generator: GeneratorLike = None,
) -> torch.Tensor:
    """``x`` + Gaussian noise of pixel std σ with the FBP noise-power spectrum (see the module).

    Args:
        x: ``(..., H, W)`` image(s) (σ in their units: convert HU with the normalisation).
        sigma: pixel standard deviation of the added noise.
        nps_peak: peak of ``NPS(f) ∝ f·exp(−f²/f_c²)`` in cycles/pixel (0 < peak ≤ 0.5;
            typical CT kernels: 0.1–0.35; default :data:`CT_NPS_PEAK`); ``None``: white noise
            (``medsr degrade --kind ct-noise --param nps_peak=``).
        generator: torch.Generator or seed.
    """
    sigma = check_nonnegative(sigma, "sigma")
    if sigma == 0:
        return x
    g = as_generator(generator)
    n = randn_like(x, g)
    if nps_peak is not None:
        peak = check_nonnegative(nps_peak, "nps_peak")
        if not 0.0 < peak <= 0.5:
            raise InvalidParameterError(
                f"nps_peak must be in (0, 0.5] cycles/pixel, got {nps_peak}"
            )
        h, w = x.shape[-2:]
        amp, var = _nps_amplitude(h, w, peak, x.device)
        spec = torch.fft.rfft2(n.to(torch.float64)) * amp
        n = (torch.fft.irfft2(spec, s=(h, w)) / math.sqrt(var)).to(x.dtype)
    return x + sigma * n


def _noise_fn(fn):
    def apply(x: torch.Tensor, scale: int, generator=None, **params) -> torch.Tensor:
        return fn(x, generator=generator, **params)

    apply.__doc__ = fn.__doc__
    # the signature callers check a request against (``degrade_image`` binds it before reading
    # pixels): ``fn``'s own parameters, so that a missing ``sigma`` or a misspelt one is named
    # there, not raised as a TypeError from inside the noise function
    own = inspect.signature(fn).parameters
    apply.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter("x", inspect.Parameter.POSITIONAL_OR_KEYWORD),
            inspect.Parameter("scale", inspect.Parameter.POSITIONAL_OR_KEYWORD),
            *(
                p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
                for name, p in own.items()
                if name not in ("x", "generator")
            ),
            inspect.Parameter("generator", inspect.Parameter.KEYWORD_ONLY, default=None),
        ]
    )
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


@register_degradation("ct-noise")
class RandomCTNoise(RandomDegradation):
    """CT image noise (Gaussian with the FBP noise-power spectrum, :func:`ct_noise`) with σ and
    the NPS peak sampled from ranges (σ in the units of the input)."""

    function = staticmethod(_noise_fn(ct_noise))
    uses_generator = True

    def __init__(
        self, sigma=(0.0, 0.01), nps_peak=(0.1, 0.35), *, scale: int = 1, per_sample: bool = True
    ) -> None:
        super().__init__(scale, per_sample=per_sample, sigma=sigma, nps_peak=nps_peak)


#: modality groups :class:`RandomScannerNoise` models (others pass through unchanged)
SCANNER_NOISE_GROUPS = ("MR", "CT", "radiograph")


class RandomScannerNoise:
    """Noise the way the scanners of a modality make it, on a random fraction of a batch.

    For each item of the batch, with probability ``fraction``: MR → :func:`rician_noise`
    (σ from ``mr_sigma``), CT → :func:`ct_noise` (σ from ``ct_sigma``, NPS peak from
    ``ct_nps_peak``; ``None``: white), radiographs (CR, DX, MG, XA, …) →
    :func:`poisson_noise` (``radiograph_dose`` quanta per pixel at intensity 1, drawn
    log-uniformly). Other modalities (US speckle, NM counts: already in the data) are returned
    unchanged. Every parameter is a value or a ``(low, high)`` range, in the input's units.

    Meant for *high-resolution training targets* (before the LR is made from them). Calling it
    is deterministic given the generator: one uniform draw per item decides whether it is
    noised, then that item's parameters and noise are drawn. ``last_params`` lists, per item,
    the parameters used (``None`` for items left clean).
    """

    def __init__(
        self,
        modality: str,
        *,
        fraction: float = 1.0,
        mr_sigma: Any = (0.005, 0.04),
        ct_sigma: Any = (0.001, 0.0085),
        ct_nps_peak: Any = (0.1, 0.35),
        radiograph_dose: Any = (1e3, 3e4),
    ) -> None:
        from medsr.modality import modality_group

        self.modality = str(modality)
        self.group = (
            self.modality
            if self.modality in SCANNER_NOISE_GROUPS
            else modality_group(self.modality)
        )
        f = check_nonnegative(fraction, "fraction")
        if f > 1:
            raise InvalidParameterError(f"fraction must be in [0, 1], got {fraction}")
        self.fraction = f
        self.params: dict[str, Any] = {}
        if self.group == "MR":
            self.params = {"sigma": _as_spec(mr_sigma)}
        elif self.group == "CT":
            self.params = {"sigma": _as_spec(ct_sigma), "nps_peak": _as_spec(ct_nps_peak)}
        elif self.group == "radiograph":
            self.params = {"counts_per_unit": _as_spec(radiograph_dose)}
        self.last_params: list[dict[str, Any] | None] = []
        probe = torch.Generator().manual_seed(0)
        self._draw(probe)  # validate fixed values and ranges early

    @property
    def active(self) -> bool:
        """Whether this modality has a noise model and a non-zero fraction."""
        return bool(self.params) and self.fraction > 0

    def _draw(self, g: torch.Generator | None) -> dict[str, Any]:
        out = {}
        for k, v in self.params.items():
            out[k] = sample_value(v, g, log=k == "counts_per_unit")
            if out[k] is not None:
                check_nonnegative(out[k], k)
        return out

    def _apply(self, x: torch.Tensor, p: dict[str, Any], g: torch.Generator | None) -> torch.Tensor:
        if self.group == "MR":
            return rician_noise(x, p["sigma"], generator=g)
        if self.group == "CT":
            return ct_noise(x, p["sigma"], p["nps_peak"], generator=g)
        return poisson_noise(x, p["counts_per_unit"], generator=g)

    def __call__(self, x: torch.Tensor, generator: GeneratorLike = None) -> torch.Tensor:
        g = as_generator(generator)
        if not self.active:
            self.last_params = [None] * int(x.shape[0])
            return x
        outs, used = [], []
        for i in range(x.shape[0]):
            item = x[i : i + 1]
            if _uniform(g) < self.fraction:
                p = self._draw(g)
                outs.append(self._apply(item, p, g).to(x.dtype))
                used.append(p)
            else:
                outs.append(item)
                used.append(None)
        self.last_params = used
        return torch.cat(outs, dim=0)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"RandomScannerNoise({self.group!r}, fraction={self.fraction}{', ' if args else ''}{args})"


def _as_spec(value: Any) -> Any:
    """A ``[low, high]`` list (from YAML) → the ``(low, high)`` range tuple of :func:`sample_value`."""
    if isinstance(value, list) and len(value) == 2:
        return (float(value[0]), float(value[1]))
    if isinstance(value, tuple):
        return (float(value[0]), float(value[1]))
    return value
