"""Slice interpolation along one axis of a volume (issue 8), on the one through-plane grid.

``interpolate_slices(image, model, factor)`` super-resolves a volume ×2 or ×4 along one axis
onto medsr's through-plane grid (:mod:`medsr.slice_grid`: cell-centred, same field of view,
``f·N`` slices — the grid of ``medsr upscale --through-plane``) with a slice interpolator
(``interp-cnn`` shipped, ``interp-gan``, ``fast-ddpm``: :mod:`medsr.models.slice`) or the
``linear``/``cubic`` baselines; ``interpolation_uncertainty`` adds an uncertainty map
(test-time augmentation, plus the variance of 4 seeded draws for the diffusion model) and its
summary. Their evaluation (``medsr evaluate --interpolation``) lives with the other reports:
:func:`medsr.reports.interpolation.evaluate_interpolation`.

The architectures live in :mod:`medsr.models.slice`, their weights with the others in
``medsr/weights/`` (``medsr models`` lists them, kind ``slice-interpolator``), and they train
through the one Lightning trainer: ``medsr train configs/interp-cnn.yaml``
(``task: slice-interpolation``, :class:`medsr.training.tasks.SliceInterpolationTask`), then
``medsr export``.

Heavy imports (torch, MONAI) happen inside the functions.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "interpolate_slices",
    "interpolation_uncertainty",
]


def __getattr__(name: str) -> Any:
    if name in ("interpolate_slices", "interpolation_uncertainty"):
        from medsr.interpolation import core

        return getattr(core, name)
    raise AttributeError(name)
