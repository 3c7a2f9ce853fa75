"""The assumed measurement model ``y = D(x)`` and the projection that makes ``D(SR) = LR``.

A super-resolved image is *consistent* with the measured low-resolution image when degrading it
with the physics that produced the measurement gives the measurement back. medsr knows that
physics (:mod:`medsr.degradations`); this module wraps the deterministic, noise-free part of the
in-plane models as a :class:`Measurement` and projects an image onto ``{x : D(x) = y}``:

===============  =========================================  ===================================
kind             ``D`` (noise-free)                         projection
===============  =========================================  ===================================
``bicubic``      optional Gaussian blur → antialiased       iterative back-projection (Irani &
                 bicubic ↓f (:func:`bicubic_downscale`)     Peleg 1991), bicubic ↑f kernel
``ct-detector``  Gaussian PSF σ (default 1 HR px) →          iterative back-projection
                 antialiased bicubic ↓f
``radiograph``   Gaussian PSF σ (default 0.5) → f×f          iterative back-projection
                 aperture mean (no quantum noise)
``kspace``       central 1/f of k-space, cell grid,         replace the measured central
                 magnitude (:func:`kspace_truncate`)        k-space (exact up to the even-size
                                                            Nyquist line, a few iterations)
===============  =========================================  ===================================

Iterative back-projection (M. Irani & S. Peleg, "Improving resolution by image registration",
CVGIP: Graphical Models and Image Processing 53(3):231–239, 1991) repeats
``x ← x + λ·U(y − D(x))`` with a back-projection kernel ``U`` and a relaxation ``λ`` (default 1.5,
halved automatically if the residual grows), until the largest residual is below ``tol`` × the
LR data range. ``U`` is by default band-limited (zero-filled k-space / sinc upsampling by ``f``,
:func:`medsr.models.classical.kspace_upsample_1d`): every correction then lies inside the
measured frequency band, so the projection adds no energy above the input's Nyquist frequency
(with a bicubic kernel, ``kernel="bicubic"``, it doubles the out-of-band power of a noise input;
``benchmarks/fidelity.py``). For MR k-space truncation the projection
is the classical data-consistency step of compressed-sensing / deep MR reconstruction: the
central k-space of the estimate is replaced by the measured one,
``x ← x + Re(f²·Aᴴ(y − A x))`` (:func:`kspace_upsample` is ``f²·Aᴴ``), which is exact in one
step for odd sizes; for even sizes the asymmetric Nyquist line converges geometrically (halves
per step).

Noise is not modelled by the projection: with noise the measured LR is matched exactly, noise
included, which is what "consistent with the data" means. Other degradations (ultrasound
lateral blur, thick slices, sparse-view CT, noise models) have no in-plane projection here and
raise :class:`~medsr.errors.InvalidParameterError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from medsr.errors import InvalidParameterError

__all__ = [
    "DEFAULT_PARAMS",
    "SUPPORTED",
    "Measurement",
    "resolve_measurement",
]

#: degradation kinds with a consistency projection, and their default (noise-free) parameters.
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    "bicubic": {"blur_sigma": 0.0},
    "ct-detector": {"sigma": 1.0},
    "radiograph": {"sigma": 0.5},
    "kspace": {"window": None},
}
SUPPORTED = tuple(DEFAULT_PARAMS)
_ALLOWED = {
    "bicubic": {"blur_sigma", "antialias"},
    "ct-detector": {"sigma"},
    "radiograph": {"sigma"},
    "kspace": {"window", "tukey_alpha"},
}
#: parameters of the random degradations that only add noise: ignored (noise is not invertible)
_NOISE = {"noise_sigma", "dose", "generator", "grid", "output"}


@dataclass(frozen=True)
class Measurement:
    """A deterministic in-plane measurement model ``D`` of one :data:`SUPPORTED` kind.

    ``forward`` maps ``(N, C, f·h, f·w)`` → ``(N, C, h, w)``; ``project`` returns the image
    closest (in the sense of the method) to ``x`` with ``D(x) = y``.
    """

    kind: str
    scale: int
    params: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ the forward model
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from medsr.degradations import bicubic_downscale, kspace_truncate, radiograph

        f = self.scale
        p = self.params
        if self.kind == "bicubic":
            return bicubic_downscale(
                x, f, blur_sigma=float(p.get("blur_sigma", 0.0)), antialias=p.get("antialias", True)
            )
        if self.kind == "ct-detector":
            return bicubic_downscale(x, f, blur_sigma=float(p.get("sigma", 1.0)))
        if self.kind == "radiograph":
            return radiograph(x, f, sigma=float(p.get("sigma", 0.5)))
        if self.kind == "kspace":
            return kspace_truncate(x, f, **self._kspace_kwargs())
        raise InvalidParameterError(f"no measurement model {self.kind!r}")  # pragma: no cover

    def _kspace_kwargs(self) -> dict[str, Any]:
        w = self.params.get("window")
        kw: dict[str, Any] = {"window": None if w in (None, "none") else str(w), "grid": "cell"}
        if "tukey_alpha" in self.params:
            kw["tukey_alpha"] = float(self.params["tukey_alpha"])
        return kw

    def describe(self) -> str:
        """``kspace``, ``ct-detector (sigma=1.0)``..."""
        shown = {k: v for k, v in self.params.items() if v is not None and v != 0.0}
        inner = ", ".join(f"{k}={v}" for k, v in sorted(shown.items()))
        return f"{self.kind} ({inner})" if inner else self.kind

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "params": dict(self.params)}

    # ------------------------------------------------------------------ projection
    def project(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        iterations: int = 30,
        tol: float = 1e-3,
        step: float = 1.5,
        data_range: float | None = None,
        kernel: str = "sinc",
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """Make ``forward(x) ≈ y``; stop once ``max|y − D(x)| ≤ tol · data_range``.

        ``kernel``: back-projection kernel of the iterative models, ``"sinc"`` (band-limited,
        default) or ``"bicubic"``; k-space truncation is always projected in k-space.

        Returns the projected tensor and ``{"iterations", "residual_max", "converged"}``
        (``residual_max`` relative to ``data_range``, the LR range when not given).
        """
        if x.shape[-2] != y.shape[-2] * self.scale or x.shape[-1] != y.shape[-1] * self.scale:
            raise InvalidParameterError(
                f"the upscaled planes ({x.shape[-2]}×{x.shape[-1]}) are not ×{self.scale} the "
                f"measured ones ({y.shape[-2]}×{y.shape[-1]})"
            )
        rng = float(data_range) if data_range else float(y.max() - y.min())
        rng = max(rng, 1e-12)
        limit = tol * rng
        if self.kind == "kspace":
            return self._project_kspace(x, y, iterations, limit, rng)
        if kernel not in ("sinc", "bicubic"):
            raise InvalidParameterError(f"kernel must be 'sinc' or 'bicubic', got {kernel!r}")
        return self._project_ibp(x, y, iterations, limit, rng, step, kernel)

    def _project_ibp(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        iterations: int,
        limit: float,
        rng: float,
        step: float,
        kernel: str,
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        from medsr.models.classical import kspace_upsample_1d

        f = self.scale

        def back(r: torch.Tensor) -> torch.Tensor:
            if kernel == "bicubic":
                return F.interpolate(r, scale_factor=f, mode="bicubic", align_corners=False)
            return kspace_upsample_1d(kspace_upsample_1d(r, f, -2), f, -1)

        r = y - self.forward(x)
        worst = float(r.abs().max())
        done = 0
        while done < iterations and worst > limit:
            cand = x + step * back(r)
            r_new = y - self.forward(cand)
            new_worst = float(r_new.abs().max())
            done += 1
            if new_worst > worst * 1.05 and step > 0.26:  # diverging: relax and retry
                step /= 2.0
                continue
            x, r, worst = cand, r_new, new_worst
        return x, {"iterations": done, "residual_max": worst / rng, "converged": worst <= limit}

    def _project_kspace(
        self, x: torch.Tensor, y: torch.Tensor, iterations: int, limit: float, rng: float
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        from medsr.degradations.kspace import (
            centered_fft2,
            centered_ifft2,
            kspace_truncate,
            kspace_upsample,
            kspace_window,
        )

        f = self.scale
        kw = self._kspace_kwargs()
        window = kw.pop("window")
        cdtype = torch.complex128 if x.dtype == torch.float64 else torch.complex64
        yc = y.to(cdtype)
        inv_w = None
        if window is not None:
            w = kspace_window(tuple(y.shape[-2:]), window, kw.get("tukey_alpha", 0.5), y.device)
            inv_w = torch.where(w > 1e-3, 1.0 / w.clamp_min(1e-3), torch.zeros_like(w)).to(cdtype)

        def residual(img: torch.Tensor) -> torch.Tensor:
            a = kspace_truncate(img, f, window=window, output="complex", **kw)
            return yc - a

        r = residual(x)
        worst = float(self.forward(x).sub(y).abs().max())
        done = 0
        while done < iterations and worst > limit:
            if inv_w is not None:  # undo the apodisation of the kept block
                r = centered_ifft2(centered_fft2(r) * inv_w)
            x = x + kspace_upsample(r, f, output="complex").real.to(x.dtype)
            done += 1
            r = residual(x)
            worst = float(self.forward(x).sub(y).abs().max())
        return x, {"iterations": done, "residual_max": worst / rng, "converged": worst <= limit}


def resolve_measurement(
    degradation: str | dict[str, Any] | Measurement | None,
    scale: int,
    modality: str | None = None,
    **params: Any,
) -> Measurement:
    """The :class:`Measurement` for a degradation spec.

    Args:
        degradation: ``None``/``"auto"``/``"default"`` → the modality's deterministic default
            (:func:`medsr.degradations.default_kind`: CT ``ct-detector``, MR ``kspace``,
            radiographs ``radiograph``, anything else ``bicubic``); a kind name; a
            ``{"kind": ..., "params": {...}}`` dict (as model cards and configs record it); or
            a :class:`Measurement`.
        scale: integer in-plane factor.
        modality: DICOM modality code of the image (for ``auto``).
        **params: parameters of the kind (noise parameters are ignored).
    """
    from medsr.degradations import default_kind

    if isinstance(degradation, Measurement):
        return degradation
    if isinstance(degradation, dict):
        params = {**(degradation.get("params") or {}), **params}
        degradation = degradation.get("kind")
    kind = str(degradation or "auto").strip().lower()
    if kind in ("auto", "default"):
        kind = default_kind(modality)
    if kind not in DEFAULT_PARAMS:
        raise InvalidParameterError(
            f"data consistency is available for the degradations {', '.join(SUPPORTED)} "
            f"(or auto); {kind!r} has no in-plane consistency projection"
        )
    clean = {k: v for k, v in params.items() if k not in _NOISE and k != "scale"}
    unknown = sorted(set(clean) - _ALLOWED[kind])
    if unknown:
        raise InvalidParameterError(
            f"degradation {kind!r} takes {', '.join(sorted(_ALLOWED[kind]))}; got {', '.join(unknown)}"
        )
    for k, v in clean.items():
        if isinstance(v, (list, tuple)):  # a random range from a training config: not a value
            raise InvalidParameterError(
                f"degradation parameter {k}={v!r} is a range; the consistency check needs one value"
            )
    merged = {**DEFAULT_PARAMS[kind], **clean}
    f = int(scale)
    if f < 1:
        raise InvalidParameterError(f"scale must be a positive integer, got {scale}")
    return Measurement(kind=kind, scale=f, params=merged)
