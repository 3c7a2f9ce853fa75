"""Modality-aware intensity normalisation to model space and its exact inverse.

A learned model sees intensities in a fixed range; the normalisation it was trained with is part
of its model card (``card["normalization"]``), so training and inference cannot disagree:

* ``{"kind": "identity"}`` — classical interpolators work in the image's own units;
* ``{"kind": "fixed", "low": L, "high": H}`` — ``(v − L) / (H − L)``, e.g. CT HU −1024…3071;
* ``{"kind": "minmax"}`` — per image: the image's own min/max map to 0…1 (MR, rasters);
* ``{"kind": "by-modality", "modalities": {CODE_OR_GROUP: spec}, "default": spec}`` — one of the
  above per modality (exact DICOM code first, then its group ``CT``/``MR``/``radiograph``/``US``/
  ``NM``, then ``default``), for models trained on several modalities.

``inverse(forward(x)) == x`` up to float rounding, so outputs return in the input's units.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from medsr.errors import CorruptInputError
from medsr.image import MedImage


@dataclass(frozen=True)
class Normalizer:
    """Affine map ``v ↦ (v − offset) / scale`` and its inverse (``offset`` and ``scale``: numbers,
    or arrays that broadcast over the values, one per time point: :meth:`per_time_point`)."""

    offset: Any = 0.0
    scale: Any = 1.0

    @classmethod
    def from_card(
        cls,
        card: dict[str, Any],
        image: MedImage,
        *,
        exclude: np.ndarray | None = None,
        array: np.ndarray | None = None,
    ) -> Normalizer:
        """The normaliser the model card prescribes for ``image`` (``exclude``: a mask shaped
        like its array of pixels whose values do not count, e.g. padding; ``array``: part of
        its array, e.g. one time point, to take the intensities from instead)."""
        spec = resolve_spec(card.get("normalization") or {"kind": "identity"}, image.modality)
        return cls.from_spec(spec, image.array if array is None else array, exclude=exclude)

    @classmethod
    def per_time_point(cls, card: dict[str, Any], image: MedImage) -> Normalizer:
        """:meth:`from_card`, each time point of an image over time (``channels="time"``,
        ``(T, Z, Y, X)``) on its own: ``offset`` and ``scale`` float32 ``(T, 1, 1, 1)`` (they
        broadcast over the array or its channel-first form) where the time points' differ, as
        a min-max normalisation's do. A time point is then normalised as it is when read on
        its own (``KEY:N``); the series' min and max gave a pre-contrast phase a fraction of the
        network's input range. Any other image: :meth:`from_card`."""
        if image.channels != "time":
            return cls.from_card(card, image)
        each = [cls.from_card(card, image, array=a) for a in image.array]
        if all(n == each[0] for n in each):
            return each[0]
        return cls(
            offset=np.asarray([n.offset for n in each], np.float32).reshape(-1, 1, 1, 1),
            scale=np.asarray([n.scale for n in each], np.float32).reshape(-1, 1, 1, 1),
        )

    def per_plane(self, planes: int) -> Normalizer:
        """A normaliser of one value per time point (:meth:`per_time_point`) for the planes of
        the image, time-major, ``planes`` of each time point: each value repeated that often.
        One of one value for all: itself."""
        if not np.ndim(self.offset):
            return self
        return Normalizer(np.repeat(self.offset, planes, 0), np.repeat(self.scale, planes, 0))

    @classmethod
    def from_spec(
        cls, spec: dict[str, Any], array: np.ndarray, *, exclude: np.ndarray | None = None
    ) -> Normalizer:
        """The normaliser of a single (resolved) spec for the intensities in ``array``, those
        where ``exclude`` is True left out."""
        kind = spec.get("kind", "identity")
        if kind == "identity":
            return cls()
        if kind == "fixed":
            low, high = float(spec["low"]), float(spec["high"])
            return cls(offset=low, scale=max(high - low, 1e-6))
        if kind == "minmax":
            if exclude is None:
                lo, hi = float(np.nanmin(array)), float(np.nanmax(array))
            else:  # no copy of the kept values
                keep = ~exclude
                lo = float(np.nanmin(array, where=keep, initial=np.inf))
                hi = float(np.nanmax(array, where=keep, initial=-np.inf))
                if not (np.isfinite(lo) and np.isfinite(hi)):  # nothing kept: as an image of 0
                    lo = hi = 0.0  # (medsr.io.padding.fill_no_data fills such an image with 0)
            return cls(offset=lo, scale=max(hi - lo, 1e-6))
        raise CorruptInputError(f"unknown normalization kind {kind!r} in the model card")

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``(x − offset) / scale`` in float32, a new array (one pass to it, one in place)."""
        y = np.subtract(x, np.float32(self.offset), dtype=np.float32)
        y /= np.float32(self.scale)
        return y

    def inverse(self, y: np.ndarray) -> np.ndarray:
        """``y · scale + offset`` in float32, a new array."""
        x = np.multiply(y, np.float32(self.scale), dtype=np.float32)
        x += np.float32(self.offset)
        return x


def resolve_spec(spec: dict[str, Any], modality: str | None) -> dict[str, Any]:
    """A card ``normalization`` → the single spec for an image of ``modality``.

    Simple specs pass through; ``by-modality`` looks up the exact modality code, then its
    group, then ``default``.
    """
    if spec.get("kind") != "by-modality":
        return spec
    table = dict(spec.get("modalities") or {})
    table["default"] = spec["default"]
    return lookup_by_modality(table, modality)


def lookup_by_modality(mapping: dict[str, Any], modality: str | None) -> Any:
    """``mapping[code]``, else ``mapping[group of code]``, else ``mapping["default"]``."""
    from medsr.modality import modality_group

    code = (modality or "OT").upper()
    if code in mapping:
        return mapping[code]
    group = modality_group(code)
    return mapping[group] if group in mapping else mapping["default"]
