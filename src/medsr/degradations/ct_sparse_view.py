"""CT physics: sparse-view / low-dose acquisition reconstructed by filtered back-projection,
and the plain detector-blur + downsampling model.

Physics (sparse view / low dose):

1. HU → linear attenuation: ``μ = μ_water·(1 + HU/1000)`` (clamped at 0, i.e. air),
   ``μ_water ≈ 0.019 /mm`` (water at ≈ 70 keV effective energy); multiplied by the pixel size
   so a line integral summed in pixel steps is dimensionless.
2. Radon transform (parallel beam): ``p(θ, t) = ∫ μ(t·cosθ − s·sinθ, t·sinθ + s·cosθ) ds`` at
   ``n_angles`` equally spaced angles over 180°; sparse view keeps every ``view_step``-th.
3. Low dose (optional): Beer–Lambert transmission with Poisson counting statistics,
   ``I = Poisson(I₀·exp(−p))``, ``p̂ = −log(max(I, min_counts)/I₀)`` (the clamp avoids log 0 in
   photon-starved rays, as scanners do).
4. Filtered back-projection with a ramp (Ram–Lak) filter, optionally apodised (Shepp–Logan,
   cosine, Hamming, Hann), defined in the spatial domain as in Kak & Slaney eq. 61 to avoid the
   DC offset of a sampled ramp; back to HU. Too few views give the characteristic streaks.

References: A. C. Kak & M. Slaney, *Principles of Computerized Tomographic Imaging*, IEEE Press
1988, ch. 3 (Radon transform, FBP) and ch. 4 (noise); T. M. Buzug, *Computed Tomography*,
Springer 2008 (HU definition, Beer–Lambert); L. Yu et al., "Development and validation of a
practical lower-dose-simulation tool for optimizing CT scan protocols", Med. Phys.
39(9):5252, 2012 (Poisson noise injection at a reduced I₀).

Implementation: Radon and FBP are written in torch (batched, any device, differentiable) by
ray-driven bilinear sampling (``grid_sample``) with unit steps for the projection and linear
interpolation on the detector for the back-projection; they follow scikit-image's
``radon``/``iradon`` (same filters, same π/(2·n_angles) normalisation) but centre the image at
its cell centre ``((H−1)/2, (W−1)/2)`` and use a detector covering the whole image diagonal, so
non-square images and content outside the inscribed circle are fine. Cost: the projection
samples ``A·T²`` points and the back-projection ``A·H·W`` (``T ≈ √(H² + W²)``): about 6 M and
3 M for a 128² slice with 200 views (tens of ms on a CPU core), ≈ 4·10⁸ for a fully sampled
512² slice (seconds on CPU, fast on GPU). Only the kept views are projected. Work is chunked
over angles to bound memory.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from medsr.degradations._common import (
    GeneratorLike,
    RandomDegradation,
    as_generator,
    check_nonnegative,
    check_scale,
    check_tensor,
    poisson,
)
from medsr.degradations._registry import register_degradation
from medsr.degradations.bicubic import bicubic_downscale
from medsr.degradations.noise import gaussian_noise
from medsr.errors import InvalidParameterError

__all__ = [
    "MU_WATER_PER_MM",
    "RandomCTDetector",
    "RandomCTSparseView",
    "ct_detector_blur",
    "ct_sparse_view",
    "default_n_angles",
    "fbp",
    "hu_to_mu",
    "mu_to_hu",
    "projection_angles",
    "radon",
]

#: linear attenuation coefficient of water at ≈ 70 keV, per mm.
MU_WATER_PER_MM = 0.019

_CHUNK_ELEMENTS = 1 << 24  # ≈ 64 MB of float32 per chunk
_FILTERS = ("ramp", "shepp-logan", "cosine", "hamming", "hann", None)


def hu_to_mu(
    hu: torch.Tensor, pixel_size_mm: float = 1.0, mu_water: float = MU_WATER_PER_MM
) -> torch.Tensor:
    """``μ·Δ = μ_water·(1 + HU/1000)·Δ`` per pixel (dimensionless), clamped at 0."""
    return (mu_water * pixel_size_mm) * (1.0 + hu / 1000.0).clamp_min(0.0)


def mu_to_hu(
    mu_px: torch.Tensor, pixel_size_mm: float = 1.0, mu_water: float = MU_WATER_PER_MM
) -> torch.Tensor:
    """Inverse of :func:`hu_to_mu` (without the clamp)."""
    return 1000.0 * (mu_px / (mu_water * pixel_size_mm) - 1.0)


def default_n_angles(shape: tuple[int, int]) -> int:
    """``⌈π/2 · max(H, W)⌉`` views over 180°: the usual angular sampling requirement."""
    return math.ceil(math.pi / 2.0 * max(shape))


def projection_angles(n_angles: int, view_step: int = 1) -> torch.Tensor:
    """Every ``view_step``-th of ``n_angles`` equally spaced angles in [0°, 180°) (float64)."""
    n = check_scale(n_angles, "n_angles")
    k = check_scale(view_step, "view_step")
    return (torch.arange(n, dtype=torch.float64) * (180.0 / n))[::k]


def _n_detectors(shape: tuple[int, int]) -> int:
    return math.ceil(math.hypot(*shape)) + 1


def _chunk(n_total: int, per_item: int) -> int:
    return max(1, min(n_total, _CHUNK_ELEMENTS // max(per_item, 1)))


def _angles_rad(angles_deg, device, dtype) -> torch.Tensor:
    if isinstance(angles_deg, torch.Tensor):
        a = angles_deg.detach().to(device=device, dtype=torch.float64).reshape(-1)
    else:
        a = torch.as_tensor(np.asarray(angles_deg, dtype=np.float64), device=device).reshape(-1)
    return (a * (math.pi / 180.0)).to(dtype)


def radon(
    x: torch.Tensor, angles_deg: torch.Tensor | np.ndarray, *, n_detectors: int | None = None
) -> torch.Tensor:
    """Parallel-beam Radon transform (line integrals in pixel units).

    Args:
        x: ``(N, C, H, W)`` attenuation per pixel.
        angles_deg: projection angles in degrees.
        n_detectors: detector bins ``T`` (default ``⌈√(H² + W²)⌉ + 1``, the whole diagonal),
            bin ``k`` at signed distance ``k − (T−1)/2`` pixels from the image centre.

    Returns:
        ``(N, C, A, T)`` sinogram.
    """
    x = check_tensor(x, (4,))
    n, c, h, w = x.shape
    if h < 2 or w < 2:
        raise InvalidParameterError("the CT image must be at least 2 × 2 pixels")
    dev, dt = x.device, x.dtype
    theta = _angles_rad(angles_deg, dev, dt)
    t_n = n_detectors or _n_detectors((h, w))
    t = torch.arange(t_n, device=dev, dtype=dt) - (t_n - 1) / 2.0
    s = t  # unit steps along each ray, spanning the diagonal
    imgs = x.reshape(n * c, h, w)
    out = torch.empty(n * c, len(theta), t_n, device=dev, dtype=dt)
    per_image = t_n * t_n
    b_step = _chunk(n * c, per_image)
    for b0 in range(0, n * c, b_step):
        img = imgs[b0 : b0 + b_step][None]  # (1, B, H, W): the batch rides on the channels
        a_step = _chunk(len(theta), per_image * img.shape[1])
        for a0 in range(0, len(theta), a_step):
            th = theta[a0 : a0 + a_step]
            cos, sin = torch.cos(th)[:, None, None], torch.sin(th)[:, None, None]
            col = (w - 1) / 2.0 + t[None, :, None] * cos - s[None, None, :] * sin
            row = (h - 1) / 2.0 + t[None, :, None] * sin + s[None, None, :] * cos
            grid = torch.stack((2.0 * col / (w - 1) - 1.0, 2.0 * row / (h - 1) - 1.0), dim=-1)
            vals = torch.nn.functional.grid_sample(
                img,
                grid.reshape(1, len(th) * t_n, t_n, 2),
                mode="bilinear",
                padding_mode="zeros",
                align_corners=True,
            )
            out[b0 : b0 + img.shape[1], a0 : a0 + len(th)] = (
                vals[0].sum(dim=-1).view(img.shape[1], len(th), t_n)
            )
    return out.reshape(n, c, len(theta), t_n)


def _fourier_filter(size: int, name: str | None) -> np.ndarray:
    """Ramp filter sampled from its spatial-domain definition (Kak & Slaney eq. 61), apodised."""
    nn = np.concatenate(
        (np.arange(1, size / 2 + 1, 2, dtype=int), np.arange(size / 2 - 1, 0, -2, dtype=int))
    )
    f = np.zeros(size)
    f[0] = 0.25
    f[1::2] = -1.0 / (np.pi * nn) ** 2
    filt = 2.0 * np.real(np.fft.fft(f))
    if name == "ramp":
        pass
    elif name == "shepp-logan":
        omega = np.pi * np.fft.fftfreq(size)[1:]
        filt[1:] *= np.sin(omega) / omega
    elif name == "cosine":
        freq = np.linspace(0, np.pi, size, endpoint=False)
        filt *= np.fft.fftshift(np.sin(freq))
    elif name == "hamming":
        filt *= np.fft.fftshift(np.hamming(size))
    elif name == "hann":
        filt *= np.fft.fftshift(np.hanning(size))
    elif name is None:
        filt[:] = 1.0
    else:
        raise InvalidParameterError(f"unknown FBP filter {name!r}; choose one of {_FILTERS}")
    return filt


def fbp(
    sinogram: torch.Tensor,
    angles_deg: torch.Tensor | np.ndarray,
    shape: tuple[int, int],
    *,
    filter: str | None = "ramp",
) -> torch.Tensor:
    """Filtered back-projection of a :func:`radon` sinogram onto an ``H × W`` grid.

    Args:
        sinogram: ``(N, C, A, T)``.
        angles_deg: the ``A`` angles in degrees.
        shape: ``(H, W)`` of the reconstruction (same centring as :func:`radon`).
        filter: ``"ramp"``, ``"shepp-logan"``, ``"cosine"``, ``"hamming"``, ``"hann"`` or
            ``None`` (plain back-projection).

    Returns:
        ``(N, C, H, W)`` attenuation per pixel.
    """
    if not isinstance(sinogram, torch.Tensor) or sinogram.ndim != 4:
        raise InvalidParameterError("the sinogram must be a (N, C, A, T) tensor")
    n, c, a_n, t_n = sinogram.shape
    h, w = (int(v) for v in shape)
    dev, dt = sinogram.device, sinogram.dtype
    theta = _angles_rad(angles_deg, dev, dt)
    if len(theta) != a_n:
        raise InvalidParameterError(f"{len(theta)} angles given for a sinogram of {a_n} views")
    size = max(64, int(2 ** math.ceil(math.log2(2 * t_n))))
    filt = torch.as_tensor(_fourier_filter(size, filter), device=dev, dtype=dt)
    proj = torch.nn.functional.pad(sinogram.reshape(n * c, a_n, t_n), (0, size - t_n))
    q = torch.fft.irfft(torch.fft.rfft(proj, dim=-1) * filt[: size // 2 + 1], n=size, dim=-1)
    q = q[..., :t_n].contiguous()
    yy = torch.arange(h, device=dev, dtype=dt) - (h - 1) / 2.0
    xx = torch.arange(w, device=dev, dtype=dt) - (w - 1) / 2.0
    yy, xx = (v.reshape(-1) for v in torch.meshgrid(yy, xx, indexing="ij"))
    recon = torch.zeros(n * c, h * w, device=dev, dtype=dt)
    b_step = _chunk(n * c, h * w)
    for b0 in range(0, n * c, b_step):
        qb = q[b0 : b0 + b_step]
        nb = qb.shape[0]
        a_step = _chunk(a_n, h * w * nb)
        for a0 in range(0, a_n, a_step):
            th = theta[a0 : a0 + a_step]
            tpos = xx[None, :] * torch.cos(th)[:, None] + yy[None, :] * torch.sin(th)[:, None]
            tpos = tpos + (t_n - 1) / 2.0
            inside = ((tpos >= 0) & (tpos <= t_n - 1)).to(dt)
            i0 = tpos.floor().clamp(0, t_n - 2)
            frac = tpos - i0
            idx = i0.long().unsqueeze(0).expand(nb, -1, -1)
            qa = qb[:, a0 : a0 + len(th), :]
            v0 = qa.gather(-1, idx)
            v1 = qa.gather(-1, idx + 1)
            recon[b0 : b0 + nb] += ((v0 * (1 - frac) + v1 * frac) * inside).sum(dim=1)
    recon = recon * (math.pi / (2.0 * a_n))
    return recon.reshape(n, c, h, w)


def ct_sparse_view(
    x: torch.Tensor,
    scale: int = 1,
    *,
    view_step: int = 4,
    n_angles: int | None = None,
    i0: float | None = None,
    pixel_size_mm: float = 1.0,
    mu_water: float = MU_WATER_PER_MM,
    filter: str | None = "ramp",
    min_counts: float = 1.0,
    generator: GeneratorLike = None,
) -> torch.Tensor:
    """Sparse-view (and optionally low-dose) CT: HU → μ → Radon → Poisson → FBP → HU.

    Args:
        x: ``(N, C, H, W)`` CT slices in Hounsfield units.
        scale: optional in-plane downscale after reconstruction (antialiased bicubic,
            :func:`~medsr.degradations.bicubic.bicubic_downscale`); 1 keeps the grid.
        view_step: keep every ``view_step``-th of the ``n_angles`` views (1: all).
        n_angles: views of the fully sampled scan over 180° (default
            :func:`default_n_angles`, ``⌈π/2·max(H, W)⌉``).
        i0: incident photons per detector bin (unattenuated ray); ``None``: no noise.
        pixel_size_mm: in-plane pixel size (sets the attenuation per pixel, hence noise).
        mu_water: attenuation of water per mm.
        filter: FBP filter (see :func:`fbp`).
        min_counts: counts are clamped to at least this before the log.
        generator: torch.Generator or seed for the Poisson noise.

    Returns:
        ``(N, C, ⌊H/scale⌋, ⌊W/scale⌋)`` in HU.
    """
    x = check_tensor(x, (4,))
    f = check_scale(scale)
    step = check_scale(view_step, "view_step")
    pix = check_nonnegative(pixel_size_mm, "pixel_size_mm")
    if pix == 0 or mu_water <= 0:
        raise InvalidParameterError("pixel_size_mm and mu_water must be > 0")
    h, w = x.shape[-2:]
    total = default_n_angles((h, w)) if n_angles is None else check_scale(n_angles, "n_angles")
    angles = projection_angles(total, step)
    mu = hu_to_mu(x, pix, mu_water)
    sino = radon(mu, angles)
    if i0 is not None:
        i0 = check_nonnegative(i0, "i0")
        if i0 == 0:
            raise InvalidParameterError("i0 (incident photons) must be > 0")
        counts = poisson(i0 * torch.exp(-sino), as_generator(generator))
        sino = -torch.log(counts.clamp_min(float(min_counts)) / i0)
    out = mu_to_hu(fbp(sino, angles, (h, w), filter=filter), pix, mu_water)
    return bicubic_downscale(out, f) if f > 1 else out


def ct_detector_blur(
    x: torch.Tensor,
    scale: int,
    *,
    sigma: float = 1.0,
    noise_sigma: float = 0.0,
    generator: GeneratorLike = None,
) -> torch.Tensor:
    """In-plane detector/reconstruction-kernel blur, downsampling and mild noise.

    Physics: the in-plane resolution of a reconstructed CT slice is limited by the detector
    aperture, focal spot and reconstruction kernel, well modelled by a Gaussian PSF (Buzug 2008,
    ch. 11); a coarser reconstruction matrix is then an antialiased resampling; low-dose noise
    is approximated by additive Gaussian noise in the image (σ in the units of ``x``, e.g. HU).

    Args:
        x: ``(N, C, H, W)``.
        scale: integer factor; output ``(N, C, ⌊H/f⌋, ⌊W/f⌋)`` (trailing rows/columns cropped).
        sigma: Gaussian PSF σ in HR pixels.
        noise_sigma: additive Gaussian noise σ after downsampling (0: none).
        generator: torch.Generator or seed for the noise.
    """
    x = check_tensor(x, (4,))
    f = check_scale(scale)
    sigma = check_nonnegative(sigma, "sigma")
    out = bicubic_downscale(x, f, blur_sigma=sigma)
    return gaussian_noise(out, noise_sigma, generator)


@register_degradation("ct-sparse-view")
class RandomCTSparseView(RandomDegradation):
    """Sparse-view / low-dose CT with random view step and dose (``i0`` drawn log-uniformly).

    Args:
        scale: in-plane downscale after reconstruction (1: same grid).
        view_step: int, ``(low, high)`` ints or a list.
        n_angles: views of the full scan (``None``: :func:`default_n_angles`).
        i0: ``None``, a value or ``(low, high)`` photons per ray.
        pixel_size_mm, mu_water, filter, min_counts: see :func:`ct_sparse_view`.
    """

    function = staticmethod(ct_sparse_view)
    uses_generator = True
    log_params = frozenset({"i0"})
    pixel_size_param = "pixel_size_mm"

    def __init__(
        self,
        scale: int = 1,
        view_step=4,
        n_angles: int | None = None,
        i0=None,
        pixel_size_mm: float = 1.0,
        mu_water: float = MU_WATER_PER_MM,
        filter: str | None = "ramp",
        min_counts: float = 1.0,
        *,
        per_sample: bool = True,
    ) -> None:
        super().__init__(
            scale,
            per_sample=per_sample,
            view_step=view_step,
            n_angles=n_angles,
            i0=i0,
            pixel_size_mm=pixel_size_mm,
            mu_water=mu_water,
            filter=filter,
            min_counts=min_counts,
        )


@register_degradation("ct-detector")
class RandomCTDetector(RandomDegradation):
    """CT detector blur + downsampling + mild noise with random PSF width and noise level.

    Args:
        scale: integer factor.
        sigma: PSF σ in HR pixels: value or ``(low, high)``.
        noise_sigma: Gaussian noise σ (units of the input): value or ``(low, high)``.
    """

    function = staticmethod(ct_detector_blur)
    uses_generator = True

    def __init__(
        self, scale: int = 2, sigma=1.0, noise_sigma=0.0, *, per_sample: bool = True
    ) -> None:
        super().__init__(scale, per_sample=per_sample, sigma=sigma, noise_sigma=noise_sigma)
