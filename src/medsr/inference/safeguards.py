"""Fidelity safeguards around an upscale: data consistency, trust maps, OOD check, provenance.

One call does it all — what the CLI (``medsr upscale --consistency on|off --maps DIR``,
``medsr batch`` with the same options), the Python API and the web service use; one more writes
the result the same way everywhere (output with its provenance, maps and their summary)::

    sr, summary = upscale_with_safeguards(image, 2, "default-x2", consistency="off")
    save_safeguarded(sr, "out.nii.gz", summary=summary, maps_dir="maps/")

What it does (each part is also a function of :mod:`medsr.safeguards`):

1. **OOD check** against the model card's training modalities and intensity statistics
   (:func:`~medsr.safeguards.ood.check_distribution`; :class:`OutOfDistributionWarning`).
2. **Upscale**, under test-time augmentation when ``tta`` (8 flips/90° rotations; the output is
   the plain, un-augmented prediction, identical to :func:`medsr.upscale`; the spread is the
   uncertainty map), plus ``samples`` stochastic draws for diffusion-type models.
3. **Consistency**: ``|D(SR) − input|`` on the input grid for the assumed degradation ``D``
   (``degradation=None`` → the model card's training degradation when it is one fixed
   supported kind, e.g. ``bicubic``; otherwise — and for ``"auto"`` and classical interpolators —
   the modality's default: CT ``ct-detector`` (σ 1 px), MR ``kspace``, CR/DX ``radiograph``,
   others ``bicubic``, as ``medsr evaluate --degradation auto``). With
   ``consistency="on"`` the output is first projected onto ``{x : D(x) = input}`` (iterative
   back-projection; measured-k-space replacement for MR).
4. **Warning** (:class:`ConsistencyWarning`, and ``consistency.exceeded`` in the summary) when
   the 99th percentile of the consistency error exceeds :data:`CONSISTENCY_THRESHOLD` (5 %) of
   the input's data range (max − min) **and** :data:`CONSISTENCY_RELATIVE` (1.5) × the same
   percentile for plain bicubic interpolation of the input. The second condition discounts the
   error every interpolator has on fine detail near the input's Nyquist frequency (on the
   corpus, bicubic itself reaches 6–8 % on a speckled ultrasound and on MR_small ×4): what is
   left means the output contradicts the measurement — or the degradation assumed is wrong.
5. **Provenance** in ``meta["provenance"]``/``meta["derivation"]`` (medsr version, model name and
   checksum, scale, degradation, consistency setting, summary), which the DICOM writer
   (DerivationDescription, ContributingEquipmentSequence), the JSON sidecars and the web
   service record.

Default: ``consistency="off"`` (:data:`CONSISTENCY_DEFAULT`). The projection makes the output
agree exactly with the *assumed* degradation; when that assumption is wrong for a real scan
(unknown reconstruction kernel, vendor filtering) it imprints the mismatch as ringing or
sharpening. Off, the output is the model's, and the map and warning say where it disagrees with
the measurement. Turn it on when the degradation is known (e.g. MR k-space truncation, or data
made with ``medsr degrade``); ``benchmarks/fidelity.py`` measures the effect of both settings.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from medsr.errors import InvalidParameterError
from medsr.image import MedImage
from medsr.safeguards.consistency import check_pair, consistency_error, enforce_consistency
from medsr.safeguards.maps import summarize_map, tta_statistics, uncertainty_map, write_maps
from medsr.safeguards.ood import OutOfDistributionWarning, check_distribution
from medsr.safeguards.operators import SUPPORTED, Measurement, resolve_measurement
from medsr.safeguards.provenance import attach_provenance, model_checksum, provenance

__all__ = [
    "CONSISTENCY_CHOICES",
    "CONSISTENCY_DEFAULT",
    "CONSISTENCY_RELATIVE",
    "CONSISTENCY_THRESHOLD",
    "UNCERTAINTY_THRESHOLD",
    "ConsistencyWarning",
    "OutOfDistributionWarning",
    "assumed_degradation",
    "check_distribution",
    "consistency_error",
    "consistency_exceeded",
    "consistency_setting",
    "enforce_consistency",
    "model_checksum",
    "resolve_measurement",
    "save_safeguarded",
    "uncertainty_map",
    "upscale_with_safeguards",
    "write_maps",
]

CONSISTENCY_CHOICES = ("on", "off")
#: ``--consistency`` default of the CLI, API and web service (see the module docstring)
CONSISTENCY_DEFAULT = "off"
#: warn when p99 |D(SR) − input| exceeds this fraction of the input's data range ...
CONSISTENCY_THRESHOLD = 0.05
#: ... and this multiple of the same percentile for bicubic interpolation of the input
CONSISTENCY_RELATIVE = 1.5
#: uncertainty voxels counted as "uncertain" above this fraction of the input's data range
UNCERTAINTY_THRESHOLD = 0.02


class ConsistencyWarning(UserWarning):
    """The upscaled image, degraded again, disagrees with the measured input."""


def consistency_setting(consistency: str | bool) -> str:
    """``"on"`` or ``"off"`` from a setting (booleans accepted); anything else is an error."""
    if isinstance(consistency, bool):
        return "on" if consistency else "off"
    s = str(consistency).strip().lower()
    if s not in CONSISTENCY_CHOICES:
        raise InvalidParameterError(f"consistency must be 'on' or 'off', got {consistency!r}")
    return s


def _data_range(image: MedImage) -> float:
    a = image.array[np.isfinite(image.array)]
    return max(float(a.max() - a.min()), 1e-12) if a.size else 1.0


def assumed_degradation(
    degradation: str | dict[str, Any] | Measurement | None,
    card: dict[str, Any],
    scale: int,
    modality: str | None,
) -> tuple[Measurement, str]:
    """The measurement model the check assumes, and where it came from.

    ``degradation`` given → that (``"auto"`` → the modality default); ``None`` → the model
    card's training degradation when it is a fixed, supported kind (e.g. ``bicubic`` for a
    model trained on bicubic pairs: the model is checked against what it was built to invert),
    otherwise the modality default (CT ``ct-detector``, MR ``kspace``, CR/DX ``radiograph``,
    others ``bicubic``). Returns ``(measurement, "given" | "model card" | "modality default")``.
    """
    if degradation is not None:
        auto = isinstance(degradation, str) and degradation.strip().lower() in ("auto", "default")
        source = "modality default" if auto else "given"
        return resolve_measurement(degradation, scale, modality), source
    spec = card.get("degradation")
    if (
        isinstance(spec, dict)
        and str(spec.get("kind", "")).lower() in SUPPORTED
        and not spec.get("steps")
    ):
        try:
            return resolve_measurement(spec, scale, modality), "model card"
        except InvalidParameterError:  # random ranges: not one measurement
            pass
    return resolve_measurement("auto", scale, modality), "modality default"


def consistency_exceeded(
    p99_rel: float,
    bicubic_p99_rel: float | None,
    threshold: float = CONSISTENCY_THRESHOLD,
    relative: float | None = CONSISTENCY_RELATIVE,
) -> bool:
    """The warning rule: p99 error above ``threshold`` (of the input range) and, when
    ``relative``, above ``relative`` × bicubic interpolation's p99 error on the same input."""
    if p99_rel <= threshold:
        return False
    if relative and bicubic_p99_rel is not None:
        return p99_rel > relative * bicubic_p99_rel
    return True


def _error_stats(err: np.ndarray, rng: float, threshold: float, units: str) -> dict[str, Any]:
    stats = summarize_map(np.abs(err), data_range=rng, threshold_rel=threshold, units=units)
    mse = float(np.mean(np.square(err, dtype=np.float64))) if err.size else 0.0
    stats["psnr_db"] = round(10 * np.log10(rng**2 / mse), 2) if mse > 0 else 99.0
    return stats


def upscale_with_safeguards(
    image: MedImage,
    scale: int = 2,
    model: str | os.PathLike[str] | None = None,
    *,
    consistency: str | bool = CONSISTENCY_DEFAULT,
    maps: bool = True,
    tta: bool = True,
    degradation: str | dict[str, Any] | Measurement | None = None,
    threshold: float = CONSISTENCY_THRESHOLD,
    relative: float | None = CONSISTENCY_RELATIVE,
    uncertainty_threshold: float = UNCERTAINTY_THRESHOLD,
    samples: int = 0,
    sampler: Callable[[MedImage], MedImage] | None = None,
    ood: bool = True,
    warn: bool = True,
    iterations: int = 30,
    tol: float = 1e-3,
    output: MedImage | None = None,
    **upscale_kwargs: Any,
) -> tuple[MedImage, dict[str, Any]]:
    """Upscale ``image`` and measure (optionally enforce) its fidelity to the input.

    Args:
        image: the measured image (any MedImage :func:`medsr.upscale` takes).
        scale: 2, 3 or 4.
        model: as for :func:`medsr.upscale` (``None`` → ``default-x{scale}`` or bicubic), or a
            loaded :class:`~medsr.inference.planes.PlaneUpscaler` (a batch's model: shared, not
            reloaded; provenance names the model it was loaded from).
        consistency: ``"on"`` projects the output so that degrading it gives the input back;
            ``"off"`` (default) only measures. Booleans are accepted.
        maps: attach ``meta["maps"]`` = ``{"consistency": |D(SR) − input| replicated onto the
            output grid, "uncertainty": TTA std}``, each ``(Z, Y, X)`` in the image's units.
        tta: compute the uncertainty map (8× the model's run time); without it no uncertainty.
        degradation: the assumed degradation ``D`` (``None``: the model card's, else the
            modality default; ``"auto"``: the modality default; a kind; ``{"kind", "params"}``;
            or a :class:`Measurement`). See :func:`assumed_degradation`.
        threshold: consistency warning threshold (p99 error / input data range).
        relative: ... and minimum ratio to bicubic interpolation's p99 error (``None``: the
            absolute threshold alone).
        uncertainty_threshold: threshold (/ data range) for the uncertain-voxel fraction.
        samples, sampler: stochastic models: number of extra draws and the function drawing
            one (default: repeated upscales when the card says ``"stochastic": true``).
        ood: run the out-of-distribution check (learned models).
        warn: emit :class:`ConsistencyWarning` / :class:`OutOfDistributionWarning`.
        iterations, tol: limits of the consistency projection.
        output: the model's plain output for ``image`` when it is already computed (a batch
            that stacks planes of several inputs in one forward pass): used instead of running
            the model again; only without ``tta`` and ``samples``.
        **upscale_kwargs: ``device``, ``batch_size``, ``clip``, ``tile`` of :func:`medsr.upscale`.

    Returns:
        ``(sr, summary)``: the upscaled MedImage (``meta["safeguards"] = summary``,
        ``meta["provenance"]``, ``meta["derivation"]`` extended, ``meta["maps"]`` when
        ``maps``) and the JSON-able summary.
    """
    from medsr.inference.planes import PlaneUpscaler
    from medsr.inference.predictor import SCALES, load_upscaler, upscale

    setting = consistency_setting(consistency)
    if int(scale) != scale or int(scale) not in SCALES:
        raise InvalidParameterError(f"scale must be one of {SCALES}, got {scale}")
    scale = int(scale)
    if output is not None and (tta or samples):
        raise InvalidParameterError("a precomputed output cannot be combined with tta or samples")
    if model is None:
        from medsr.models.pretrained import default_model_name

        model = default_model_name(scale)
    if isinstance(model, PlaneUpscaler):
        if model.scale != scale:
            raise InvalidParameterError(f"the loaded model is for ×{model.scale}, not ×{scale}")
        card, source_model = model.card, model.model
    else:
        _, card = load_upscaler(model, scale, in_channels=1)
        source_model = model
    meas, source = assumed_degradation(degradation, card, scale, image.modality)
    rng = _data_range(image)
    caught: list[str] = []

    ood_result = check_distribution(image, card, warn=False) if ood else {"checked": False}
    if ood_result.get("flag"):
        caught.append("out-of-distribution input: " + "; ".join(ood_result["reasons"]))
        if warn:
            warnings.warn(
                f"out-of-distribution input for model {card.get('name', model)!r}: "
                + "; ".join(ood_result["reasons"]),
                OutOfDistributionWarning,
                stacklevel=2,
            )

    t0 = time.perf_counter()
    if output is not None:
        check_pair(output, image, scale)
        sr, std, unc_info = output, None, {"method": "none", "transforms": 1}
    else:
        sr, std, unc_info = tta_statistics(
            image,
            scale,
            model,
            tta=tta,
            samples=samples,
            sampler=sampler,
            stochastic=bool(card.get("stochastic")),
            **upscale_kwargs,
        )
    t_model = time.perf_counter() - t0

    t1 = time.perf_counter()
    err_before = consistency_error(sr, image, meas, scale)
    cons: dict[str, Any] = {"setting": setting, "threshold_rel": threshold}
    if setting == "on":
        sr = enforce_consistency(sr, image, meas, scale, iterations=iterations, tol=tol)
        err = consistency_error(sr, image, meas, scale)
        proj = sr.meta.get("consistency") or {}
        cons.update(method=proj.get("method"), iterations=proj.get("iterations"))
        cons["error_before"] = _error_stats(err_before, rng, threshold, image.units)
    else:
        err = err_before
    cons["error"] = _error_stats(err, rng, threshold, image.units)
    p99 = cons["error"]["p99_rel"]
    base = None
    if relative and p99 > threshold:  # only then is the bicubic reference needed
        ref = upscale(image, scale, "bicubic", **upscale_kwargs)
        base = float(np.percentile(np.abs(consistency_error(ref, image, meas, scale)), 99)) / rng
        cons["bicubic_p99_rel"] = round(base, 6)
    cons["relative"] = relative
    cons["exceeded"] = consistency_exceeded(p99, base, threshold, relative)
    t_cons = time.perf_counter() - t1
    if cons["exceeded"]:
        extra = f", {p99 / base:.1f}x bicubic interpolation's" if base else ""
        msg = (
            f"the upscaled image disagrees with the input: 99th percentile of "
            f"|degrade(SR) - input| is {cons['error']['p99']:.4g} {image.units} "
            f"({p99:.1%} of the input range{extra}; threshold {threshold:.0%}) "
            f"for the assumed degradation {meas.describe()}"
        )
        caught.append(msg)
        if warn:
            warnings.warn(msg, ConsistencyWarning, stacklevel=2)

    unc: dict[str, Any] = dict(unc_info)
    if std is not None:
        unc["map"] = summarize_map(
            std, data_range=rng, threshold_rel=uncertainty_threshold, units=image.units
        )
    summary: dict[str, Any] = {
        "model": card.get("name", str(model)),
        "scale": scale,
        "degradation": {**meas.as_dict(), "describe": meas.describe(), "source": source},
        "consistency": cons,
        "uncertainty": unc,
        "ood": ood_result,
        "warnings": caught,
        "timing_ms": {"model": round(t_model * 1000, 1), "consistency": round(t_cons * 1000, 1)},
    }
    meta = {**sr.meta, "safeguards": summary}
    meta.pop("consistency", None)
    if maps:
        cmap = np.abs(err)
        if image.channels:
            cmap = cmap.mean(axis=0)
        cmap = np.repeat(np.repeat(cmap, scale, axis=-2), scale, axis=-1).astype(np.float32)
        meta["maps"] = {"consistency": cmap}
        if std is not None:
            meta["maps"]["uncertainty"] = std
    sr = sr.replace(meta=meta)
    record = provenance(
        model=source_model,
        card=card,
        scale=scale,
        degradation=meas.describe(),
        consistency=setting,
        summary=summary,
    )
    return attach_provenance(sr, record), summary


def save_safeguarded(
    result: MedImage,
    target: str | os.PathLike[str],
    *,
    summary: dict[str, Any] | None = None,
    maps_dir: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write an output of :func:`upscale_with_safeguards` (what ``medsr upscale`` and
    ``medsr batch`` both do) and return the path written.

    The image goes to ``target`` without its in-memory maps; its provenance (``meta``, set by
    :func:`upscale_with_safeguards`) lands where each writer keeps it: DICOM
    DerivationDescription and ContributingEquipmentSequence, the JSON sidecar of NIfTI, PNG, TIFF
    and ``.npy`` outputs. With ``maps_dir``, the consistency/uncertainty maps go there
    (:func:`~medsr.safeguards.maps.write_maps`: NIfTI or PNG + sidecars, a derived DICOM series
    for DICOM inputs) with ``summary`` as ``summary.json``.
    """
    from medsr.io import save_image

    maps = result.meta.get("maps")
    clean = result.replace(meta={k: v for k, v in result.meta.items() if k != "maps"})
    written = save_image(clean, target, overwrite=overwrite)
    if maps_dir is not None and maps:
        write_maps(maps, maps_dir, like=clean, summary=summary, overwrite=overwrite)
    return written
