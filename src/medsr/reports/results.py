"""What an evaluation measured: the metric names and the per-image / whole-run result records."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: the noise seed of every evaluation's degradation (the same degraded input on every run)
SEED = 0
METRICS_2D = ("psnr", "ssim", "ms_ssim", "mse", "mae", "nrmse")
#: the low and high band of the error (:func:`medsr.metrics.band_rms2d`, σ = 2·scale output px),
#: in the image's units, per slice averaged (in-plane evaluation)
BAND_METRICS = ("low_band_rms", "high_band_rms")
#: fidelity to the input (``maps=True``): consistency error |D(SR) − LR| and TTA uncertainty
MAP_METRICS = ("consistency_mae", "consistency_max", "uncertainty_mean")
HIGHER_IS_BETTER = {
    "psnr": True,
    "ssim": True,
    "ms_ssim": True,
    "mse": False,
    "mae": False,
    "nrmse": False,
    "low_band_rms": False,
    "high_band_rms": False,
    "consistency_mae": False,
    "consistency_max": False,
    "uncertainty_mean": False,
}


@dataclass
class ImageResult:
    name: str
    modality: str
    shape: tuple[int, int, int]
    degradation: str
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # model → metric → value
    seconds: dict[str, float] = field(default_factory=dict)
    figures: list[str] = field(default_factory=list)
    map_seconds: dict[str, float] = field(default_factory=dict)  # model → time to measure the maps
    consistency_degradation: str = ""  # the D of |D(SR) − LR| (Measurement.describe())
    scored: float = 1.0  # fraction of the reference's pixels scored (no data is left out)
    #: the R of PSNR and SSIM (:func:`medsr.metrics.data_range_for` of the evaluated reference)
    data_range: float = math.nan
    #: how the reference became what was scored, where it differs from the file (colour to
    #: luminance, a crop to a multiple of the scale, a slab of a long volume)
    notes: list[str] = field(default_factory=list)
    #: the reference's units (``HU``, ``a.u.``…): every error metric is in them
    units: str = ""


@dataclass
class EvaluationResult:
    scale: int
    models: list[str]
    images: list[ImageResult]
    skipped: list[tuple[str, str]]
    out_dir: Path
    degradation: str
    params: dict[str, Any]
    baseline: str = "bicubic"  # the method gains are measured against (linear-z through-plane)
    consistency: str = "off"  # data-consistency projection of every output (on/off)
    maps: bool = False  # consistency-error and uncertainty maps measured
    #: what reproduces the run (:func:`medsr.reports.reproduce.run_record`): versions, machine,
    #: device, seed of the degradation, max_slices, each model's identity and precision
    run: dict[str, Any] = field(default_factory=dict)

    def values(self, model: str, metric: str, modality: str | None = None) -> np.ndarray:
        return np.array(
            [
                r.metrics[model][metric]
                for r in self.images
                if metric in r.metrics.get(model, {})
                and (modality is None or r.modality == modality)
            ],
            dtype=float,
        )
