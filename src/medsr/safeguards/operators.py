"""The assumed measurement model ``y = D(x)`` and the projection that makes ``D(SR) = LR``.

A super-resolved image is *consistent* with the measured low-resolution image when degrading it
with the physics that produced the measurement gives the measurement back. medsr knows that
physics (:mod:`medsr.degradations`); this module wraps the deterministic, noise-free part of the
models as a :class:`Measurement` and projects an image onto ``{x : D(x) = y}``:

==================  =========================================  ===================================
kind                ``D`` (noise-free)                         projection
==================  =========================================  ===================================
``bicubic``         optional Gaussian blur → antialiased       iterative back-projection (Irani &
                    bicubic ↓f (:func:`bicubic_downscale`)     Peleg 1991), bicubic ↑f kernel
``ct-detector``     Gaussian PSF σ (default 1 HR px) →          iterative back-projection
                    antialiased bicubic ↓f
``radiograph``      Gaussian PSF σ (default 0.5) → f×f          iterative back-projection
                    aperture mean (no quantum noise)
``kspace``          central 1/f of k-space, cell grid,         replace the measured central
                    magnitude (:func:`kspace_truncate`)        k-space's magnitude (one or two
                                                               passes)
``ultrasound``      lateral-only Gaussian beam blur σ           iterative back-projection
                    (default 1.25 HR px, axis −1) →
                    antialiased bicubic ↓f in-plane
``ct-sparse-view``  HU → μ → Radon on every ``view_step``-th   Landweber-type iterative
                    of ``n_angles`` views → FBP → HU            back-projection (slow: see below)
                    (→ antialiased bicubic ↓f when f > 1)
``thick-slice``     slice profile (Gaussian FWHM / box width   1-D iterative back-projection
                    ``thickness``, default f) along the slice  along the slice axis only
                    axis → every f-th (centred) slice          (through-plane, see below)
==================  =========================================  ===================================

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
``x ← x + Re(f²·Aᴴ(t − z))`` with ``z = A x`` the complex truncation and ``t`` the nearest truncation
of magnitude ``y`` that keeps ``z``'s imaginary part (:func:`medsr.degradations.kspace.magnitude_step`;
:func:`kspace_upsample` is ``f²·Aᴴ``): the input is a magnitude image, and a real image's
truncation is complex only through an even axis's unpaired Nyquist bin, whose change is doubled
(the real part splits it with its unkept mirror). Odd sizes: one exact pass; even sizes: one or
two. A pass that leaves more than 90 % of the residual ends the projection
(:data:`Measurement.KSPACE_STALL`). Until session 15 the step replaced the block by the magnitude
as if it were the complex truncation and corrected the Nyquist bin by half a pass; on the k-space
validation set the magnitude step raises the gain of `default-x2-kspace` over zero-fill from
+0.73 to +0.80 dB, and of `default-x4-kspace` from +0.59 to +0.67.

**Ultrasound** is the in-plane pipeline medsr trains ultrasound models on
(:func:`medsr.degradations.default_degradation` for US: :func:`ultrasound_lateral` at scale 1,
i.e. a Gaussian blur along the lateral axis only, then bicubic ↓f on both axes), with the beam
σ fixed at the middle of the training range 0.5–2 HR px, **1.25**. The axial axis (rows, depth)
is never blurred: ``D`` of an image that varies only axially is plain bicubic ↓f. It is not the
``ultrasound`` *degradation* with ``scale = f`` (lateral-only decimation), which an in-plane
upscaler cannot produce. ``axis=-2`` is for images stored transposed.

**Thick slices** are a through-plane measurement: ``D`` maps ``f·n`` thin slices to ``n`` thick
ones along one axis (``axis``: −2, rows, by default — a sagittal/coronal reformat with z as rows,
which is how :func:`medsr.safeguards.consistency.enforce_consistency` presents a volume; −1; or
−3 for ``(N, C, D, H, W)`` volumes) and leaves the other axes alone; ``U`` is the 1-D sinc (or
cubic) upsampling along that axis only. ``thickness`` is in thin slices (default ``f``,
contiguous slabs). The slice profile still passes ≈ 0.4 (Gaussian, FWHM f) or ≈ 0.6 (box, width
f) of the measured Nyquist frequency, so it converges in a handful of iterations (measured: 4–5
for ×2–×4 on a smooth volume).

**Sparse-view CT**: the measured image is a filtered back-projection from every ``view_step``-th
of ``n_angles`` views (default ``⌈π/2·max(H, W)⌉`` of the *upscaled* grid, as
:func:`ct_sparse_view` computes it for the HR image: give ``n_angles`` for a real scan). ``D`` is
the noise-free :func:`ct_sparse_view` (HU → μ → Radon of the kept views → FBP → HU, then the
in-plane ↓f when ``scale > 1``), affine in HU (``D(x) = L·x + c``, ``L`` = FBP∘Radon) apart from
the clamp of μ at 0 below −1000 HU. The projection is Landweber's iteration
``x ← x + λ·U(y − D(x))`` — not a reconstruction from the sinogram — with ``U`` the identity at
``scale = 1`` and ``L∘(sinc ↑f)`` at ``scale > 1`` (≈ ``Dᵀ``: FBP∘Radon is nearly
self-adjoint; plain ``sinc ↑f`` there stalls and degrades the image, because the streaks fold
content from above the LR band into it), ``λ`` = ``step``/‖DU‖ (power iteration: on few views
``L`` amplifies streak patterns 2–4×, so the unscaled step diverges), and the iterate kept
≥ −1000 HU (μ ≥ 0, where the forward model clamps). ``L`` has a large null space and small
singular values, so the residual falls slowly and monotonically and does **not** reach ``tol``
in the default 30 iterations (``info["converged"]`` is ``False``). Measured on a 64²–128² head
phantom with ``view_step`` 4 (26 of 101 … 51 of 202 views), 30 iterations: at ×1 the largest
residual falls 9–21× (64²: 24 % → 1.2 % of the data range; mean error to the truth
97 → 18 HU), at ×2 5–6× (64²: 13 % → 2.7 %; 100 → 46 HU); 0.5–3.5 s per slice on one busy
CPU core (``tests/safeguards/test_operators.py``).

Noise is not modelled by the projection: with noise the measured LR is matched exactly, noise
included, which is what "consistent with the data" means. Other degradations (noise models,
``compose`` pipelines) have no projection here and raise
:class:`~medsr.errors.InvalidParameterError`. ``project`` also returns the residual after every
accepted step (``info["history"]``).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from medsr.errors import InvalidParameterError

if TYPE_CHECKING:  # torch is imported where a method runs: options are checked without it
    import torch

__all__ = [
    "DEFAULT_PARAMS",
    "SUPPORTED",
    "THROUGH_PLANE",
    "Measurement",
    "resolve_measurement",
]

#: degradation kinds with a consistency projection, and their default (noise-free) parameters.
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    "bicubic": {"blur_sigma": 0.0},
    "ct-detector": {"sigma": 1.0},
    "radiograph": {"sigma": 0.5},
    "kspace": {"window": None},
    # the middle of the US training range σ 0.5–2 HR px (default_degradation)
    "ultrasound": {"lateral_sigma": 1.25, "axis": -1},
    "ct-sparse-view": {"view_step": 4, "n_angles": None, "filter": "ramp"},
    "thick-slice": {"profile": "gaussian", "thickness": None, "axis": -2},
}
#: kinds that reduce one axis across slices (the upscaled volume has f× the slices, same planes)
THROUGH_PLANE = ("thick-slice",)
#: the degradations of ``medsr degrade --kind`` that are no measurement to check or project
#: (noise, compositions; a test keeps this equal to the registry's others, without torch here)
NO_FORWARD_MODEL = ("compose", "ct-noise", "gaussian-noise", "poisson-noise", "rician-noise")
#: kinds with an in-plane projection (the upscaled image has f× the rows and columns)
SUPPORTED = tuple(k for k in DEFAULT_PARAMS if k not in THROUGH_PLANE)
_ALLOWED = {
    "bicubic": {"blur_sigma", "antialias"},
    "ct-detector": {"sigma"},
    "radiograph": {"sigma"},
    "kspace": {"window", "tukey_alpha", "image"},
    "ultrasound": {"lateral_sigma", "axis"},
    "ct-sparse-view": {"view_step", "n_angles", "filter", "pixel_size_mm", "mu_water"},
    "thick-slice": {"profile", "thickness", "axis"},
}
#: parameters of the random degradations that only add noise: ignored (noise is not invertible)
_NOISE = {"noise_sigma", "dose", "generator", "grid", "output", "i0", "min_counts"}
_FBP_FILTERS = ("ramp", "shepp-logan", "cosine", "hamming", "hann", None)


@dataclass(frozen=True)
class Measurement:
    """A deterministic measurement model ``D`` of one kind of :data:`DEFAULT_PARAMS`.

    In-plane kinds (:data:`SUPPORTED`): ``forward`` maps ``(N, C, f·h, f·w)`` → ``(N, C, h, w)``.
    Through-plane kinds (:data:`THROUGH_PLANE`) reduce only ``params["axis"]`` by ``f``.
    ``ct-sparse-view`` at ``scale=1`` keeps the grid. ``project`` returns the image closest
    (in the sense of the method) to ``x`` with ``D(x) = y``.
    """

    kind: str
    scale: int
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def through_plane(self) -> bool:
        """``True`` when ``D`` reduces one axis across slices (``thick-slice``)."""
        return self.kind in THROUGH_PLANE

    def reduced_axes(self, ndim: int = 4) -> tuple[int, ...]:
        """The (non-negative) axes of an ``ndim`` tensor that ``D`` shrinks by ``scale``."""
        if self.through_plane:
            return (int(self.params.get("axis", -2)) % ndim,)
        return (ndim - 2, ndim - 1)

    # ------------------------------------------------------------------ the forward model
    def _banded(
        self, x: torch.Tensor, sigma: tuple[float, float], resample: str = "bicubic"
    ) -> torch.Tensor | None:
        """``x`` blurred by ``sigma = (σ_y, σ_x)`` and reduced by ``resample`` as one banded
        operator per axis (:mod:`medsr.degradations._banded`: the values of the kind's chain to
        float rounding, 2–4× faster on large planes), or None where the chain runs step by step
        (tensors that need gradients, other than fp32, ×1)."""
        import torch

        from medsr.degradations._banded import blur_downscale

        if x.dtype != torch.float32 or x.requires_grad or x.ndim != 4 or self.scale == 1:
            return None
        return blur_downscale(x, self.scale, sigma, resample)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from medsr.degradations import (
            bicubic_downscale,
            ct_sparse_view,
            kspace_truncate,
            radiograph,
            thick_slice,
            ultrasound_lateral,
        )

        f = self.scale
        p = self.params
        # the kinds that blur then reduce try the banded operator first (a plain bicubic
        # reduction stays torch's own: as fast)
        if self.kind in ("bicubic", "ct-detector"):
            key, default = ("blur_sigma", 0.0) if self.kind == "bicubic" else ("sigma", 1.0)
            sigma = float(p.get(key, default))
            antialias = p.get("antialias", True)
            banded = self._banded(x, (sigma, sigma)) if sigma > 0 and antialias else None
            if banded is not None:
                return banded
            return bicubic_downscale(x, f, blur_sigma=sigma, antialias=antialias)
        if self.kind == "radiograph":
            sigma = float(p.get("sigma", 0.5))
            banded = self._banded(x, (sigma, sigma), "mean")
            return banded if banded is not None else radiograph(x, f, sigma=sigma)
        if self.kind == "kspace":
            return kspace_truncate(x, f, output=self._kspace_image(), **self._kspace_kwargs())
        if self.kind == "ultrasound":  # default_degradation's US pipeline, noise-free
            sigma = float(p.get("lateral_sigma", 1.25))
            axis = int(p.get("axis", -1))
            # the chain blurs the lateral axis before it crops it to a multiple of f (the banded
            # pass crops first): the same values only when there is nothing to crop there
            lateral = axis % x.ndim if x.ndim == 4 else None
            if sigma > 0 and lateral in (2, 3) and not x.shape[lateral] % f:
                banded = self._banded(x, (sigma, 0.0) if lateral == 2 else (0.0, sigma))
                if banded is not None:
                    return banded
            blurred = ultrasound_lateral(x, 1, lateral_sigma=sigma, axis=axis)
            return bicubic_downscale(blurred, f)
        if self.kind == "thick-slice":
            t = p.get("thickness")
            return thick_slice(
                x,
                f,
                profile=str(p.get("profile", "gaussian")),
                thickness=None if t is None else float(t),
                axis=int(p.get("axis", -2)),
            )
        if self.kind == "ct-sparse-view":
            extra = {k: float(p[k]) for k in ("pixel_size_mm", "mu_water") if k in p}
            n = p.get("n_angles")
            return ct_sparse_view(
                x,
                f,
                view_step=int(p.get("view_step", 4)),
                n_angles=None if n is None else int(n),
                i0=None,
                filter=p.get("filter", "ramp"),
                **extra,
            )
        raise InvalidParameterError(f"no measurement model {self.kind!r}")  # pragma: no cover

    def _kspace_image(self) -> str:
        """What the input of a ``kspace`` measurement is: ``magnitude`` (what MR scanners store,
        the default) or ``real`` (a signed image: a phase-corrected MR, or data with negative
        values stated as k-space data; :func:`medsr.pipeline.resolve_physics` says so)."""
        image = str(self.params.get("image") or "magnitude")
        if image not in ("magnitude", "real"):
            raise InvalidParameterError(
                f"degradation 'kspace': image must be 'magnitude' or 'real', got {image!r}"
            )
        return image

    def _kspace_kwargs(self) -> dict[str, Any]:
        w = self.params.get("window")
        kw: dict[str, Any] = {"window": None if w in (None, "none") else str(w), "grid": "cell"}
        if "tukey_alpha" in self.params:
            kw["tukey_alpha"] = float(self.params["tukey_alpha"])
        return kw

    #: the k-space projection stops once a pass leaves more than this fraction of the residual:
    #: its passes alternate between two sets, one of them not convex (the measured magnitude),
    #: and can stagnate short of the tolerance (noise-like content at the Nyquist frequency)
    KSPACE_STALL = 0.9
    #: power-iteration steps of the sparse-view projection's step-size estimate (:meth:`_gain`)
    GAIN_ITERATIONS = 8
    #: bilinear samples per second of the sparse-view forward model, float64 on two CPU cores
    #: (a 1024² plane: 1.3 G samples, ~50 s): what :meth:`work` estimates are divided by for time
    WORK_RATE = 2e7

    def work(self, shape: tuple[int, int]) -> float:
        """Samples one :meth:`forward` of a ``shape`` (upscaled) plane interpolates, for the kinds
        whose cost grows faster than the pixels: ``ct-sparse-view`` (a Radon transform over the
        kept views, ``A·T²`` bilinear samples, then a filtered back-projection, ``A·H·W``). 0 for
        the others (a few passes over the pixels)."""
        if self.kind != "ct-sparse-view":
            return 0.0
        from medsr.degradations.ct_sparse_view import _n_detectors

        t = _n_detectors(shape)
        return float(len(self._sparse_view_angles(shape)) * (t * t + shape[0] * shape[1]))

    def projection_work(self, shape: tuple[int, int], iterations: int) -> float:
        """:meth:`work` of :meth:`project` at most: ``iterations`` steps of a forward model and a
        back-projection, and the sparse-view step size's power iteration (:meth:`_gain`)."""
        return self.work(shape) * 2 * (iterations + self.GAIN_ITERATIONS)

    def _sparse_view_angles(self, shape: tuple[int, int]) -> torch.Tensor:
        """The views the sparse-view model keeps for planes of ``shape``."""
        from medsr.degradations.ct_sparse_view import default_n_angles, projection_angles

        n = self.params.get("n_angles")
        total = default_n_angles(shape) if n is None else int(n)
        return projection_angles(total, int(self.params.get("view_step", 4)))

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

        Returns the projected tensor and ``{"iterations", "residual_max", "converged",
        "history"}`` (``residual_max`` relative to ``data_range``, the LR range when not given;
        ``history``: the relative largest residual before the first and after every accepted
        step).
        """
        self._check_shapes(x, y)
        rng = float(data_range) if data_range else float(y.max() - y.min())
        rng = max(rng, 1e-12)
        limit = tol * rng
        if self.kind == "kspace":
            return self._project_kspace(x, y, iterations, limit, rng)
        if kernel not in ("sinc", "bicubic"):
            raise InvalidParameterError(f"kernel must be 'sinc' or 'bicubic', got {kernel!r}")
        return self._project_ibp(x, y, iterations, limit, rng, step, kernel)

    def _check_shapes(self, x: torch.Tensor, y: torch.Tensor) -> None:
        f = self.scale
        if x.ndim != y.ndim:
            raise InvalidParameterError(
                f"the upscaled image has {x.ndim} dimensions, the measured one {y.ndim}"
            )
        reduced = self.reduced_axes(x.ndim)
        ok = all(x.shape[d] == y.shape[d] * (f if d in reduced else 1) for d in range(2, x.ndim))
        if ok:
            return
        if self.through_plane:
            ax = reduced[0] - x.ndim
            raise InvalidParameterError(
                f"the upscaled data {tuple(x.shape[2:])} are not the measured "
                f"{tuple(y.shape[2:])} with ×{f} the slices along axis {ax} "
                "(thick-slice consistency is through-plane)"
            )
        raise InvalidParameterError(
            f"the upscaled planes ({x.shape[-2]}×{x.shape[-1]}) are not ×{f} the "
            f"measured ones ({y.shape[-2]}×{y.shape[-1]})"
        )

    def _back(self, r: torch.Tensor, kernel: str) -> torch.Tensor:
        """``U``: the residual on the measured grid → a correction on the upscaled grid."""
        up = self._upsample(r, kernel)
        if self.kind == "ct-sparse-view" and self.scale > 1:
            # Landweber's Dᵀ = (FBP∘Radon)ᵀ∘(↓f)ᵀ ≈ (FBP∘Radon)∘(↑f): FBP∘Radon is nearly
            # self-adjoint (pixel-driven back-projection vs ray-driven projection)
            up = self._fbp_radon(up)
        return up

    def _fbp_radon(self, v: torch.Tensor) -> torch.Tensor:
        """The linear part of the sparse-view model in HU: ``FBP(Radon(v))`` on the kept views."""
        from medsr.degradations.ct_sparse_view import fbp, radon

        h, w = v.shape[-2:]
        angles = self._sparse_view_angles((h, w))
        return fbp(radon(v, angles), angles, (h, w), filter=self.params.get("filter", "ramp"))

    def _upsample(self, r: torch.Tensor, kernel: str) -> torch.Tensor:
        import torch.nn.functional as F

        from medsr.models.classical import kspace_upsample_1d

        f = self.scale
        if f == 1:
            return r
        if self.through_plane:
            ax = self.reduced_axes(r.ndim)[0]
            if kernel == "sinc":
                return kspace_upsample_1d(r, f, ax)
            rm = r.movedim(ax, -1)
            n = rm.shape[-1]
            up = F.interpolate(
                rm.reshape(-1, 1, 1, n), size=(1, n * f), mode="bicubic", align_corners=False
            )
            return up.reshape(*rm.shape[:-1], n * f).movedim(-1, ax)
        if kernel == "bicubic":
            return F.interpolate(r, scale_factor=f, mode="bicubic", align_corners=False)
        return kspace_upsample_1d(kspace_upsample_1d(r, f, -2), f, -1)

    def _gain(self, y: torch.Tensor, kernel: str, iterations: int = GAIN_ITERATIONS) -> float:
        """Power-iteration estimate of ``‖D∘U‖`` (the linear part of ``D``) on the measured grid.

        FBP∘Radon on few views amplifies some patterns (streak modes) up to ≈ 2–4× (96² with
        every 4th/8th view), so the relaxation of the sparse-view projection is divided by it.
        """
        import torch

        gen = torch.Generator().manual_seed(0)
        v = torch.randn(y[:1, :1].shape, generator=gen, dtype=torch.float64).to(y)
        zero = self.forward(self._back(torch.zeros_like(v), kernel))
        gain = 1.0
        for _ in range(iterations):
            v = v * (100.0 / v.abs().max().clamp_min(1e-12))  # ±100: clear of the μ ≥ 0 clamp
            w = self.forward(self._back(v, kernel)) - zero
            gain = float(w.norm() / v.norm().clamp_min(1e-12))
            v = w
        return gain

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
        r = y - self.forward(x)
        worst = float(r.abs().max())
        history = [worst / rng]
        if self.kind == "ct-sparse-view" and worst > limit:  # Landweber: λ·‖DU‖ below 2
            step = step / max(1.0, self._gain(y, kernel))
        done = 0
        while done < iterations and worst > limit:
            cand = x + step * self._back(r, kernel)
            if self.kind == "ct-sparse-view":  # μ ≥ 0, where the forward model clamps
                cand = cand.clamp_min(-1000.0)
            r_new = y - self.forward(cand)
            new_worst = float(r_new.abs().max())
            done += 1
            if new_worst > worst * 1.05 and step > 0.26:  # diverging: relax and retry
                step /= 2.0
                continue
            x, r, worst = cand, r_new, new_worst
            history.append(worst / rng)
        return x, {
            "iterations": done,
            "residual_max": worst / rng,
            "converged": worst <= limit,
            "history": history,
        }

    def _project_kspace(
        self, x: torch.Tensor, y: torch.Tensor, iterations: int, limit: float, rng: float
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        import torch

        from medsr.degradations.kspace import kspace_truncate, magnitude_step

        kw = self._kspace_kwargs()

        def truncation(img: torch.Tensor) -> torch.Tensor:
            # complex: its magnitude is forward(img), and the next step starts from it
            return kspace_truncate(img, self.scale, output="complex", **kw)

        # a plane with negative values is no magnitude (magnitude_step replaces its block as a
        # real image): its residual is the real part's
        signed = (y < 0).flatten(-2).any(-1)[..., None, None]

        def measured(z: torch.Tensor) -> torch.Tensor:
            return torch.where(signed, z.real, z.abs()).to(y.dtype)

        z = truncation(x)
        worst = float(measured(z).sub(y).abs().max())
        history = [worst / rng]
        done = 0
        while done < iterations and worst > limit:
            x = magnitude_step(x, y, self.scale, measured=z, **kw)
            done += 1
            z = truncation(x)
            last, worst = worst, float(measured(z).sub(y).abs().max())
            history.append(worst / rng)
            if worst > self.KSPACE_STALL * last:  # stagnated: alternating projections onto a
                break  # magnitude set can stop short of it (noise-like content at Nyquist)
        return x, {
            "iterations": done,
            "residual_max": worst / rng,
            "converged": worst <= limit,
            "history": history,
        }


def _number(kind: str, name: str, value: Any, *, minimum: float = 0.0) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InvalidParameterError(
            f"degradation {kind!r}: {name} must be a number, got {value!r}"
        ) from None
    if not math.isfinite(v) or v < minimum:
        raise InvalidParameterError(
            f"degradation {kind!r}: {name} must be a number ≥ {minimum:g}, got {value!r}"
        )
    return v


def _whole(kind: str, name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value != int(value):
        raise InvalidParameterError(
            f"degradation {kind!r}: {name} must be a whole number ≥ 1, got {value!r}"
        )
    if int(value) < 1:
        raise InvalidParameterError(
            f"degradation {kind!r}: {name} must be a whole number ≥ 1, got {value!r}"
        )
    return int(value)


def _validate(kind: str, p: dict[str, Any]) -> dict[str, Any]:
    """Check (and normalise the types of) the parameters of the kinds added for consistency."""
    p = dict(p)
    if kind == "ultrasound":
        p["lateral_sigma"] = _number(kind, "lateral_sigma", p["lateral_sigma"])
        if p["axis"] not in (-1, -2):
            raise InvalidParameterError(
                f"degradation 'ultrasound': axis is the lateral axis of the planes, -1 (columns, "
                f"default) or -2 (rows, for images stored transposed); got {p['axis']!r}"
            )
    elif kind == "thick-slice":
        if p["profile"] not in ("gaussian", "box"):
            raise InvalidParameterError(
                f"degradation 'thick-slice': profile must be 'gaussian' or 'box', "
                f"got {p['profile']!r}"
            )
        if p["thickness"] is not None:
            p["thickness"] = _number(kind, "thickness (in thin slices)", p["thickness"])
        if p["axis"] not in (-1, -2, -3):
            raise InvalidParameterError(
                "degradation 'thick-slice': axis is the slice axis of the tensor, -2 (rows of a "
                f"reformatted plane, default), -1, or -3 for (N, C, D, H, W); got {p['axis']!r}"
            )
    elif kind == "ct-sparse-view":
        p["view_step"] = _whole(kind, "view_step", p["view_step"])
        if p["n_angles"] is not None:
            p["n_angles"] = _whole(kind, "n_angles", p["n_angles"])
            if p["view_step"] > p["n_angles"]:
                raise InvalidParameterError(
                    f"degradation 'ct-sparse-view': view_step {p['view_step']} keeps fewer than "
                    f"one of the {p['n_angles']} views"
                )
        if p["filter"] not in _FBP_FILTERS:
            raise InvalidParameterError(
                f"degradation 'ct-sparse-view': filter must be one of "
                f"{', '.join(str(f) for f in _FBP_FILTERS)}; got {p['filter']!r}"
            )
        for k in ("pixel_size_mm", "mu_water"):
            if k in p and _number(kind, k, p[k]) <= 0:
                raise InvalidParameterError(
                    f"degradation 'ct-sparse-view': {k} must be > 0, got {p[k]!r}"
                )
    return p


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
            radiographs ``radiograph``, anything else ``bicubic``); a kind name (any of
            :data:`DEFAULT_PARAMS`: also ``ultrasound``, ``ct-sparse-view`` and the
            through-plane ``thick-slice``); a ``{"kind": ..., "params": {...}}`` dict (as model
            cards and configs record it); or a :class:`Measurement`.
        scale: integer factor (in-plane; along the slice axis for ``thick-slice``;
            ``ct-sparse-view`` also takes 1).
        modality: DICOM modality code of the image (for ``auto``).
        **params: parameters of the kind (noise parameters are ignored).
    """
    if isinstance(degradation, Measurement):
        return degradation
    if isinstance(degradation, dict):
        params = {**(degradation.get("params") or {}), **params}
        degradation = degradation.get("kind")
    kind = str(degradation or "auto").strip().lower()
    if kind in ("auto", "default"):
        from medsr.degradations import default_kind

        kind = default_kind(modality)
    if kind not in DEFAULT_PARAMS:
        physics = (
            f"{', '.join(SUPPORTED)} (or auto) in-plane, {', '.join(THROUGH_PLANE)} through-plane"
        )
        if kind not in NO_FORWARD_MODEL:  # a typo: say so, as `medsr degrade --kind` does
            raise InvalidParameterError(f"unknown degradation {kind!r}; choose one of: {physics}")
        raise InvalidParameterError(
            f"degradation {kind!r} is not a measurement medsr can check or project (noise and "
            f"compositions have no forward model); choose one of: {physics}"
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
    merged = _validate(kind, {**DEFAULT_PARAMS[kind], **clean})
    try:
        f = int(scale)
    except (TypeError, ValueError):
        raise InvalidParameterError(f"scale must be a positive integer, got {scale!r}") from None
    if f < 1:
        raise InvalidParameterError(f"scale must be a positive integer, got {scale}")
    return Measurement(kind=kind, scale=f, params=merged)
