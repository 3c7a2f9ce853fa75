"""Modality-aware intensity normalisation to model space and its exact inverse.

A learned model sees intensities in a fixed range; the normalisation it was trained with is part
of its model card (``card["normalization"]``), so training and inference cannot disagree:

* ``{"kind": "identity"}`` — classical interpolators work in the image's own units;
* ``{"kind": "fixed", "low": L, "high": H}`` — ``(v − L) / (H − L)``, e.g. CT HU −1024…3071;
* ``{"kind": "minmax"}`` — per image: the image's own min/max map to 0…1 (MR, rasters).

``inverse(forward(x)) == x`` up to float rounding, so outputs return in the input's units.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from medsr.image import MedImage


@dataclass(frozen=True)
class Normalizer:
    """Affine map ``v ↦ (v − offset) / scale`` and its inverse."""

    offset: float = 0.0
    scale: float = 1.0

    @classmethod
    def from_card(cls, card: dict[str, Any], image: MedImage) -> Normalizer:
        spec = card.get("normalization") or {"kind": "identity"}
        kind = spec.get("kind", "identity")
        if kind == "identity":
            return cls()
        if kind == "fixed":
            low, high = float(spec["low"]), float(spec["high"])
            return cls(offset=low, scale=max(high - low, 1e-6))
        if kind == "minmax":
            lo, hi = float(np.nanmin(image.array)), float(np.nanmax(image.array))
            return cls(offset=lo, scale=max(hi - lo, 1e-6))
        raise ValueError(f"unknown normalization kind {kind!r} in model card")

    def forward(self, x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, dtype=np.float32) - self.offset) / self.scale).astype(np.float32)

    def inverse(self, y: np.ndarray) -> np.ndarray:
        return (np.asarray(y, dtype=np.float32) * self.scale + self.offset).astype(np.float32)
