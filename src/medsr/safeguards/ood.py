"""Out-of-distribution check: is this image like what the model was trained on?

A learned model is only trustworthy on images like its training data. The model card records
the modalities it was trained on (``training_data.modalities``) and, for models trained by
``medsr train`` since this check exists, intensity statistics per modality in model space
(``training_data.training_stats``, from :func:`intensity_stats`). :func:`check_distribution`
flags an image when

1. its modality (DICOM code, or the code's group: CT, MR, radiograph, US, NM) is not among the
   training modalities;
2. in the model's normalised space more than 1 % of its voxels fall outside [−0.1, 1.1] (the
   model never saw such values: e.g. a fixed CT window applied to MR values); or
3. training statistics exist for its modality and the image's normalised mean or standard
   deviation lies outside the range seen over training slices, widened by half that range
   (+ 0.05).

Flags are reported (``flag``, ``reasons``) and raised as :class:`OutOfDistributionWarning`.
Classical interpolators have no training distribution and are not checked.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np

from medsr.image import MedImage
from medsr.io.padding import COMPUTE, NoData, no_data_of

__all__ = [
    "OutOfDistributionWarning",
    "check_distribution",
    "intensity_stats",
    "training_modalities",
]

#: normalised values outside this interval count as unseen
NORMALISED_RANGE = (-0.1, 1.1)
#: fraction of voxels outside :data:`NORMALISED_RANGE` that flags the image
MAX_OUTSIDE = 0.01


class OutOfDistributionWarning(UserWarning):
    """The image differs from the model's training data: its output deserves less trust."""


def _r(v: float) -> float:
    return float(f"{float(v):.5g}")


def intensity_stats(slices: Iterable[np.ndarray], max_values: int = 200_000) -> dict[str, Any]:
    """Intensity statistics of normalised training slices (for the model card).

    Returns ``{"n_slices", "mean", "std", "p01", "p50", "p99", "slice_mean": [min, max],
    "slice_std": [min, max]}`` (percentiles from a deterministic subsample of ≤ ``max_values``).
    """
    means, stds, pool = [], [], []
    for s in slices:
        a = np.asarray(s, dtype=np.float64)
        a = a[np.isfinite(a)]
        if not a.size:
            continue
        means.append(a.mean())
        stds.append(a.std())
        pool.append(a[:: max(1, a.size // 20_000)])
    if not means:
        return {"n_slices": 0}
    allv = np.concatenate(pool)
    allv = allv[:: max(1, allv.size // max_values)]
    return {
        "n_slices": len(means),
        "mean": _r(allv.mean()),
        "std": _r(allv.std()),
        "p01": _r(np.percentile(allv, 1)),
        "p50": _r(np.percentile(allv, 50)),
        "p99": _r(np.percentile(allv, 99)),
        "slice_mean": [_r(min(means)), _r(max(means))],
        "slice_std": [_r(min(stds)), _r(max(stds))],
    }


def training_modalities(card: dict[str, Any]) -> list[str]:
    """Modalities the card says the model was trained on (``[]`` when unknown)."""
    for holder in (card.get("training_data"), card.get("data"), card):
        if isinstance(holder, dict) and holder.get("modalities"):
            return [str(m).upper() for m in holder["modalities"]]
    return []


def _training_stats(card: dict[str, Any], modality: str) -> dict[str, Any] | None:
    from medsr.intensity import lookup_by_modality

    for holder in (card.get("training_data"), card.get("data"), card):
        if isinstance(holder, dict) and isinstance(holder.get("training_stats"), dict):
            table = dict(holder["training_stats"])
            table.setdefault("default", None)
            try:
                found = lookup_by_modality(table, modality)
            except KeyError:
                return None
            return found if isinstance(found, dict) and found.get("n_slices") else None
    return None


def _modality_seen(modality: str, trained: list[str]) -> bool:
    from medsr.degradations.compose import modality_group

    code = (modality or "OT").upper()
    group = modality_group(code)
    return code in trained or (
        group != "default" and any(modality_group(t) == group for t in trained)
    )


def _widen(lo: float, hi: float) -> tuple[float, float]:
    margin = 0.5 * (hi - lo) + 0.05
    return lo - margin, hi + margin


def check_distribution(
    image: MedImage, card: dict[str, Any], *, warn: bool = True, no_data: NoData = COMPUTE
) -> dict[str, Any]:
    """Compare ``image`` with the training distribution recorded in the model ``card``.

    Returns ``{"checked", "flag", "reasons", "modality", "training_modalities",
    "normalised": {mean, std, p01, p99, frac_outside}}`` and, when ``warn`` and flagged, emits an
    :class:`OutOfDistributionWarning`. ``no_data``: the image's
    :func:`~medsr.io.padding.no_data_mask` where the caller has it. An image over time
    (``channels="time"``): each time point checked on its own, as it is read alone (its own
    normalisation: :meth:`~medsr.intensity.Normalizer.per_time_point`), in ``time_points``;
    at the top the record of a flagged one (the most reasons) or else the first
    (``time_point``), ``flag`` whether any is flagged (``flagged_time_points``).
    """
    modality = (image.modality or "OT").upper()
    learned = card.get("kind") not in ("interpolator", "classical") and bool(
        card.get("architecture")
    )
    if not learned:
        return {
            "checked": False,
            "flag": False,
            "reasons": [],
            "modality": modality,
            "note": "classical interpolator: no training distribution",
        }
    # padding is not an intensity the model will see: left out (of the sample and of the
    # normaliser's statistics)
    pad = no_data_of(image, no_data)
    if image.channels == "time":
        records = [
            _checked(image.array[t], None if pad is None else pad[t], image, card, modality)
            for t in range(image.array.shape[0])
        ]
        flagged = [t for t, r in enumerate(records) if r["flag"]]
        top = max(flagged, key=lambda t: len(records[t]["reasons"])) if flagged else 0
        result = {
            **records[top],
            "time_point": top,
            "flagged_time_points": flagged,
            "time_points": records,
        }
    else:
        result = _checked(
            image.array, None if pad is None else (pad if image.channels else pad[0]),
            image, card, modality,
        )  # fmt: skip
    if result["reasons"] and warn:
        warnings.warn(
            "out-of-distribution input for model "
            f"{card.get('name', card.get('architecture'))!r}: " + "; ".join(result["reasons"]),
            OutOfDistributionWarning,
            stacklevel=2,
        )
    return result


def _checked(
    array: np.ndarray,
    mask: np.ndarray | None,
    image: MedImage,
    card: dict[str, Any],
    modality: str,
) -> dict[str, Any]:
    """:func:`check_distribution`'s record of one volume's ``array`` (of ``image``; ``mask``:
    its no data, shaped alike), from an evenly spaced sample of at most ~500,000 of its pixels,
    the measured finite ones kept (no copy of the image)."""
    from medsr.intensity import Normalizer

    trained = training_modalities(card)
    reasons: list[str] = []
    if trained and not _modality_seen(modality, trained):
        reasons.append(
            f"modality {modality} is not in the model's training data ({', '.join(trained)})"
        )
    flat = array.reshape(-1)
    step = max(1, flat.size // 500_000)
    sample = flat[::step]
    keep = np.isfinite(sample)
    if mask is not None:
        keep &= ~mask.reshape(-1)[::step]
    sample = sample[keep]
    try:
        norm = Normalizer.from_card(card, image, exclude=mask, array=array)
        z = norm.forward(sample).astype(np.float64)
    except (KeyError, ValueError, TypeError) as exc:
        z = sample.astype(np.float64)
        reasons.append(f"the model card's normalisation cannot be applied ({exc})")
    if not z.size:
        z = np.zeros(1)
    lo, hi = NORMALISED_RANGE
    outside = float(((z < lo) | (z > hi)).mean())
    p01, p99 = np.percentile(z, [1, 99])  # one partition for both
    normalised = {
        "mean": _r(z.mean()),
        "std": _r(z.std()),
        "p01": _r(p01),
        "p99": _r(p99),
        "frac_outside": _r(outside),
    }
    if outside > MAX_OUTSIDE:
        reasons.append(
            f"{outside:.1%} of the intensities fall outside the model's normalised range "
            f"[{lo}, {hi}] (p1 {normalised['p01']}, p99 {normalised['p99']})"
        )
    stats = _training_stats(card, modality)
    if stats:
        mlo, mhi = _widen(*stats["slice_mean"])
        slo, shi = _widen(*stats["slice_std"])
        if not mlo <= z.mean() <= mhi:
            reasons.append(
                f"normalised mean {normalised['mean']} is outside the training range "
                f"{stats['slice_mean']} for {modality}"
            )
        if not slo <= z.std() <= shi:
            reasons.append(
                f"normalised contrast (std {normalised['std']}) is outside the training range "
                f"{stats['slice_std']} for {modality}"
            )
    return {
        "checked": True,
        "flag": bool(reasons),
        "reasons": reasons,
        "modality": modality,
        "training_modalities": trained,
        "training_stats": bool(stats),
        "normalised": normalised,
    }
