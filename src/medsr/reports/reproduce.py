"""What an evaluation report states so that its numbers can be reproduced and cited: the software
and machine, the device and seed, each model's identity and arithmetic, and how the metrics were
defined (the data range of PSNR/SSIM, the SSIM window)."""

from __future__ import annotations

import platform
from typing import Any

from medsr.image import MedImage

#: the keys of an output's ``meta["derivation"]`` that identify how a model made it
_MODEL_KEYS = (
    "method",
    "model",
    "model_version",
    "model_checksum",
    "precision",
    "low_band",
    "ensemble",
)


def model_record(output: MedImage) -> dict[str, Any]:
    """A model's identity as its output records it (``meta["derivation"]``: name, version,
    checksum of the weights or ``classical:<name>``, precision, low-band guard)."""
    deriv = output.meta.get("derivation") or {}
    return {k: deriv[k] for k in _MODEL_KEYS if deriv.get(k) is not None}


def run_record(
    *,
    device: str,
    seed: int,
    max_slices: int | None,
    models: dict[str, dict[str, Any]],
    modality: str | None = None,
) -> dict[str, Any]:
    """The ``reproduce`` entry of ``summary.json`` (see :func:`metric_definitions` for the rest):
    medsr, torch, NumPy and Python versions, the platform, the device the models ran on (CPU or
    GPU model), the degradation's noise seed, ``max_slices``, the ``modality`` stated for
    references that carry none (``--modality``; ``None``: none stated) and ``models`` (label →
    record)."""
    import numpy as np
    import torch

    from medsr._version import __version__
    from medsr.inference.device import describe_device, resolve_device

    return {
        "medsr_version": __version__,
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "device": describe_device(resolve_device(device)),
        "seed": int(seed),
        "max_slices": max_slices,
        "modality": modality,
        "models": models,
    }


def metric_definitions(crop: int, *, through_plane: bool = False) -> dict[str, str]:
    """How PSNR and SSIM were computed (the constants of :mod:`medsr.metrics`), in words."""
    from medsr.metrics import BAND_SIGMA_PER_SCALE, SSIM_K1, SSIM_K2, SSIM_SIGMA, SSIM_WIN

    bands = (
        {}
        if through_plane
        else {
            "bands": (
                "low_band_rms / high_band_rms: per slice, the error SR − reference, set to 0 "
                "where it is not scored, low-passed in-plane with a Gaussian of σ = "
                f"{BAND_SIGMA_PER_SCALE:g}·scale = {BAND_SIGMA_PER_SCALE * crop:g} output px "
                "(reflected edges, truncated at 4 σ); the RMS of that low-pass (low band: "
                "brightness, contrast, coarse shapes moved) and of the rest (high band: noise "
                "turned into texture, edges) over the scored pixels, in each image's units "
                "(summary.json 'images'), averaged over slices"
            )
        }
    )
    return {
        "data_range": (
            "R of PSNR = 10·log10(R²/MSE) and of SSIM: max − min of each evaluated reference "
            "(the whole image or volume slab, CT values below −1024 HU counted as −1024), the "
            "same R for every model and every slice of that reference (per image: the per-image "
            "table, summary.json 'images')"
        ),
        "ssim": (
            f"Gaussian window σ = {SSIM_SIGMA} px truncated to {SSIM_WIN} taps, K1 = {SSIM_K1}, "
            f"K2 = {SSIM_K2}, population (co)variances, mean over the valid region "
            f"({SSIM_WIN // 2} px from every edge) of the scored pixels; ssim_3d: the same "
            f"window in 3-D (σ in voxels), 2-D maps pooled where a volume has fewer than "
            f"{SSIM_WIN} slices (scikit-image's structural_similarity)"
        ),
        "border": (
            f"{crop} pixels at each in-plane edge not scored"
            + (f"; the first and last {crop} slices not scored" if through_plane else "")
        ),
        **bands,
    }
