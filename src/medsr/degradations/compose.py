"""Chaining degradations, and the modality-aware default training degradation.

:func:`default_degradation` picks the physics that best matches how a lower-resolution image
of each modality is actually acquired (each model's module documents and cites its physics).
Noise levels are in the units the pipeline works in — medsr's normalised model space, where
intensities are roughly in [0, 1] — so they are "mild" relative to that range:

==================  ========================================================================
modality            pipeline
==================  ========================================================================
CT                  detector PSF blur (σ 0.3–1.2 HR px) → antialiased bicubic ↓f → Gaussian
                    noise σ ≤ 0.01 (:class:`~.ct_sparse_view.RandomCTDetector`)
MR                  k-space truncation to 1/f, window none/Hamming/Tukey, complex noise
                    σ ≤ 0.02 ⇒ Rician magnitude (:class:`~.kspace.RandomKSpace`)
CR DX MG XA RF …    detector PSF (σ 0.3–1.0) → f × f aperture → Poisson quanta, dose 10³–10⁵
                    per pixel at intensity 1 (:class:`~.radiograph.RandomRadiograph`)
US                  extra lateral beam blur (σ 0.5–2 HR px, x only) → bicubic ↓f in-plane
NM PT               Gaussian blur (σ 0.5–1.5) → bicubic ↓f → Poisson, 10²–10⁴ counts/unit
anything else, OT   bicubic ↓f
==================  ========================================================================
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

import torch

from medsr.degradations._common import GeneratorLike, as_generator, check_scale
from medsr.degradations._registry import register_degradation
from medsr.degradations.bicubic import RandomBicubic
from medsr.degradations.ct_sparse_view import RandomCTDetector
from medsr.degradations.kspace import RandomKSpace
from medsr.degradations.noise import RandomPoissonNoise
from medsr.degradations.radiograph import RandomRadiograph
from medsr.degradations.ultrasound import RandomUltrasound
from medsr.errors import InvalidParameterError

__all__ = ["MODALITY_GROUPS", "Compose", "default_degradation", "modality_group"]

from medsr.modality import MODALITY_GROUPS, modality_group


def _takes_generator(fn: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return "generator" in params or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()
    )


@register_degradation("compose")
class Compose:
    """Apply degradations in order: ``Compose([a, b])(x, g) == b(a(x, g), g)``.

    Each item is a callable ``(x) -> Tensor`` or ``(x, generator=...) -> Tensor``; the same
    generator (or seed, turned into one generator) is passed along, so the chain is
    deterministic given it.
    """

    def __init__(self, transforms: Iterable[Callable[..., torch.Tensor]]) -> None:
        self.transforms = list(transforms)
        for t in self.transforms:
            if not callable(t):
                raise InvalidParameterError(f"Compose items must be callable, got {t!r}")
        self._with_generator = [_takes_generator(t) for t in self.transforms]

    def __call__(self, x: torch.Tensor, generator: GeneratorLike = None) -> torch.Tensor:
        g = as_generator(generator)
        for t, with_g in zip(self.transforms, self._with_generator, strict=True):
            x = t(x, generator=g) if with_g else t(x)
        return x

    def __len__(self) -> int:
        return len(self.transforms)

    def __getitem__(self, i: int) -> Callable[..., torch.Tensor]:
        return self.transforms[i]

    def __repr__(self) -> str:
        inner = ", ".join(repr(t) for t in self.transforms)
        return f"Compose([{inner}])"


class OneOf:
    """Degrade each sample of a batch with one pipeline drawn from ``transforms``.

    ``weights`` are the drawing probabilities (normalised). Used to train one blind model on a
    mixture, e.g. plain bicubic and each modality's physical degradation. All pipelines must
    map a batch to the same shape.
    """

    def __init__(
        self, transforms: Iterable[Callable[..., torch.Tensor]], weights: Iterable[float]
    ) -> None:
        self.transforms = list(transforms)
        w = torch.tensor([float(v) for v in weights], dtype=torch.float64)
        if len(self.transforms) < 1 or w.numel() != len(self.transforms):
            raise InvalidParameterError("OneOf needs one weight per pipeline")
        if not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise InvalidParameterError(f"OneOf weights must be non-negative, got {w.tolist()}")
        self.weights = w / w.sum()
        self._with_generator = [_takes_generator(t) for t in self.transforms]

    def __call__(self, x: torch.Tensor, generator: GeneratorLike = None) -> torch.Tensor:
        g = as_generator(generator)
        # the draw happens where the generator lives (a CUDA generator needs CUDA weights)
        weights = self.weights if g is None else self.weights.to(g.device)
        pick = torch.multinomial(weights, x.shape[0], replacement=True, generator=g)
        out: torch.Tensor | None = None
        for i, (t, with_g) in enumerate(zip(self.transforms, self._with_generator, strict=True)):
            sel = (pick == i).nonzero(as_tuple=True)[0]
            if sel.numel() == 0:
                continue
            part = x.index_select(0, sel.to(x.device))
            y = t(part, generator=g) if with_g else t(part)
            if out is None:
                out = y.new_empty((x.shape[0], *y.shape[1:]))
            out.index_copy_(0, sel.to(y.device), y)
        assert out is not None
        return out

    def __repr__(self) -> str:
        inner = ", ".join(
            f"{w:.2f}: {t!r}" for w, t in zip(self.weights.tolist(), self.transforms, strict=True)
        )
        return f"OneOf({{{inner}}})"


@register_degradation("default")
def default_degradation(modality: str = "OT", scale: int = 2) -> Compose:
    """The modality-aware random degradation pipeline (see the module table).

    Args:
        modality: DICOM modality code (case-insensitive); unknown codes get plain bicubic.
        scale: integer in-plane factor; every pipeline maps ``(N, C, H, W)`` to
            ``(N, C, ⌊H/f⌋, ⌊W/f⌋)``.
    """
    f = check_scale(scale)
    group = modality_group(modality)
    if group == "CT":
        steps: list[Any] = [RandomCTDetector(f, sigma=(0.3, 1.2), noise_sigma=(0.0, 0.01))]
    elif group == "MR":
        steps = [
            RandomKSpace(
                f,
                window=[None, "hamming", "tukey"],
                tukey_alpha=(0.2, 0.8),
                noise_sigma=(0.0, 0.02),
            )
        ]
    elif group == "radiograph":
        steps = [RandomRadiograph(f, sigma=(0.3, 1.0), dose=(1e3, 1e5))]
    elif group == "US":
        steps = [RandomUltrasound(1, lateral_sigma=(0.5, 2.0)), RandomBicubic(f)]
    elif group == "NM":
        steps = [
            RandomBicubic(f, blur_sigma=(0.5, 1.5)),
            RandomPoissonNoise(counts_per_unit=(1e2, 1e4)),
        ]
    else:
        steps = [RandomBicubic(f)]
    return Compose(steps)
