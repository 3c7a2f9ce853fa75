"""Supervised through-plane slice interpolation (issue 8).

``interpolate_slices(image, model, factor)`` inserts slices (×2, ×4 = two ×2 passes) with a
residual CNN (``interp-cnn``), an adversarially trained CNN (``interp-gan``), a 10-step
Fast-DDPM (``fast-ddpm``) or the ``linear``/``cubic`` baselines; ``train_interpolator`` trains
the networks; ``evaluate_interpolation`` writes the comparison report;
``interpolation_uncertainty`` adds an uncertainty map (test-time augmentation, plus the
variance of 4 seeded draws for the diffusion model) and its summary.

Heavy imports (torch, MONAI) happen inside the functions.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "evaluate_interpolation",
    "inserted_geometry",
    "interpolate_slices",
    "interpolation_uncertainty",
    "train_interpolator",
]


def __getattr__(name: str) -> Any:
    if name in ("interpolate_slices", "inserted_geometry", "interpolation_uncertainty"):
        from medsr.interpolation import core

        return getattr(core, name)
    if name == "train_interpolator":
        from medsr.interpolation.train import train_interpolator

        return train_interpolator
    if name == "evaluate_interpolation":
        from medsr.interpolation.evaluate import evaluate_interpolation

        return evaluate_interpolation
    raise AttributeError(name)
