"""The one pipeline: validate → load → upscale → safeguards → provenance → save.

Every front end — ``medsr upscale`` (CLI), :func:`medsr.upscale_file` (API), the web service,
``medsr batch`` and ``medsr pacs upscale`` — is a thin client of this module, so every output of
every front end carries the same safeguards and the same provenance::

    from medsr.pipeline import upscale_file, upscale_with_safeguards, save_safeguarded

    upscale_file("ct.dcm", "ct_x2/", scale=2)                      # a file → a file
    sr, summary = upscale_with_safeguards(image, 2, "default-x2")  # a MedImage → a MedImage
    save_safeguarded(sr, "out.nii.gz", summary=summary, maps_dir="maps/")

Options are validated once (:func:`check_options`): scale, model (through
:func:`medsr.models.resolver.resolve_model`), consistency, degradation (the physics the user
states), modality, precision.

**Physics stated by the user** (``degradation``): ``None``/``"none"`` — unknown; ``"auto"`` — from
the DICOM header (MR → ``kspace``; anything else unknown; see :func:`physics_from_header`); or a
kind of ``medsr degrade --kind``. A known physics decides the *base interpolator* (zero-filled
k-space for ``kspace``, bicubic otherwise: the classical peer, whose low band learned models
keep — :mod:`medsr.models.lowband`), the measurement of the consistency check, and whether
``consistency="auto"`` (the default) projects: it does only when the physics is known.

What it does (each part is also a function of :mod:`medsr.safeguards`):

1. **OOD check** against the model card's training modalities and intensity statistics
   (:func:`~medsr.safeguards.ood.check_distribution`; :class:`OutOfDistributionWarning`).
2. **Upscale**, under test-time augmentation when ``tta`` (8 flips/90° rotations; the output is
   the plain, un-augmented prediction, identical to :func:`medsr.upscale`; the spread is the
   uncertainty map), plus ``samples`` stochastic draws for diffusion-type models. Learned
   models' detail is checked twice (:class:`DetailCheckWarning` when either acts): one scale
   down before the pass (:func:`detail_self_check`) and at full scale after it
   (:func:`detail_full_check`); where it does not hold up the output moves towards lanczos.
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

Default: ``consistency="auto"`` (:data:`CONSISTENCY_DEFAULT`): on when the physics is known, off otherwise. The projection makes the output
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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medsr.durations import ZERO_SHOT_BUDGET_S
from medsr.errors import InvalidParameterError, MedSRWarning
from medsr.image import MedImage, require_image
from medsr.io.limits import (  # re-exported: every front end's output-size check
    check_output_size,
    output_kind,
)
from medsr.io.padding import (
    COMPUTE,
    NoData,
    fill_no_data,
    mean_over_held,
    no_data_fill,
    no_data_mask,
    no_data_of,
    padding_of_planes,
)
from medsr.modality import check_modality, modality_group, set_modality  # re-exported (core)
from medsr.models.resolver import LoadedModel, check_scale, resolve_model
from medsr.safeguards.consistency import (
    CONSISTENCY_CHOICES,
    CONSISTENCY_DEFAULT,
    CONSISTENCY_RELATIVE,
    CONSISTENCY_THRESHOLD,
    ConsistencyWarning,
    check_pair,
    consistency_error,
    consistency_exceeded,
    consistency_setting,
    enforce_consistency,
)
from medsr.safeguards.maps import (
    UNCERTAINTY_THRESHOLD,
    summarize_map,
    tta_statistics,
    uncertainty_map,
    write_maps,
)
from medsr.safeguards.ood import OutOfDistributionWarning, check_distribution
from medsr.safeguards.operators import SUPPORTED, Measurement, resolve_measurement
from medsr.safeguards.provenance import (
    attach_provenance,
    consistency_label,
    model_checksum,
    provenance,
)

if TYPE_CHECKING:
    from medsr.inference.planes import PlaneJob, PlaneUpscaler

__all__ = [
    "CONSISTENCY_CHOICES",
    "CONSISTENCY_DEFAULT",
    "CONSISTENCY_RELATIVE",
    "CONSISTENCY_THRESHOLD",
    "UNCERTAINTY_THRESHOLD",
    "ConsistencyWarning",
    "DetailCheckWarning",
    "OutOfDistributionWarning",
    "assumed_degradation",
    "check_distribution",
    "check_modality",
    "check_options",
    "check_paths",
    "consistency_error",
    "consistency_exceeded",
    "consistency_setting",
    "enforce_consistency",
    "model_checksum",
    "output_grid",
    "physics_from_header",
    "resolve_measurement",
    "save_safeguarded",
    "set_modality",
    "uncertainty_map",
    "upscale_file",
    "upscale_through_plane",
    "upscale_with_safeguards",
    "write_maps",
    "zero_shot_checked",
]


def _data_range(
    image: MedImage, no_data: NoData = COMPUTE, *, time_point: int | None = None
) -> float:
    """The input's range over the pixels that hold data (:func:`medsr.io.padding.no_data_mask`:
    a CT's fill at −2000 or −3024 HU would widen a CT's range by a quarter to a half, and every
    threshold relative to it; ``no_data``: :func:`medsr.io.padding.no_data_of`).
    ``time_point``: that time point's of an image over time (as it is on its own)."""
    a = image.array
    pad = no_data_of(image, no_data)
    if time_point is None:
        if pad is not None:
            a = a[~(pad if image.channels else pad[0])]
    else:
        a = a[time_point]
        if pad is not None:
            a = a[~pad[time_point]]
    return max(float(a.max() - a.min()), 1e-12) if a.size else 1.0


def _ranges(image: MedImage, no_data: NoData = COMPUTE) -> float | list[float]:
    """:func:`_data_range` of ``image``; an image over time: each time point's own
    (:func:`_time_point_ranges`), the list the statistics of its time points are made relative
    to."""
    pad = no_data_of(image, no_data)
    return _time_point_ranges(image, pad) if image.channels == "time" else _data_range(image, pad)


def _time_point_ranges(image: MedImage, pad: np.ndarray | None) -> list[float]:
    """:func:`_data_range` of each time point of an image over time (``pad``: its no-data mask)."""
    return [_data_range(image, pad, time_point=t) for t in range(image.array.shape[0])]


def _time_point_noises(image: MedImage, pad: np.ndarray | None) -> list[np.ndarray]:
    """The noise of each plane of each time point of an image over time
    (:func:`~medsr.safeguards.error_bound.image_noise`; ``pad``: its no-data mask)."""
    from medsr.safeguards.error_bound import image_noise

    a = image.array
    return [
        image_noise(a[t : t + 1], None if pad is None else ~pad[t : t + 1])
        for t in range(a.shape[0])
    ]


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


def _error_stats(
    err: np.ndarray,
    rng: float,
    threshold: float,
    units: str,
    held: np.ndarray | None = None,
) -> dict[str, Any]:
    """Statistics of a consistency error (:func:`summarize_map`, and its PSNR) over the pixels
    that hold data (``held``, shaped like ``err``; all when ``None``): an error of 0 where
    nothing was measured is no evidence of agreement, and would dilute the mean and percentiles
    the warning is judged on (a head CT's fill: a fifth of its pixels)."""
    if held is not None:
        err = err[held]
    stats = summarize_map(np.abs(err), data_range=rng, threshold_rel=threshold, units=units)
    flat = err.reshape(-1, err.shape[-1]) if err.ndim > 1 else err.reshape(1, -1)
    step = max(
        1, (1 << 20) // max(flat.shape[1], 1)
    )  # float64 a megapixel at a time, not the whole error
    total = sum(
        float(np.square(flat[i : i + step], dtype=np.float64).sum())
        for i in range(0, flat.shape[0], step)
    )
    mse = total / err.size if err.size else 0.0
    stats["psnr_db"] = round(10 * np.log10(rng**2 / mse), 2) if mse > 0 else 99.0
    return stats


def judge_consistency(
    cons: dict[str, Any],
    measured: MedImage,
    err: np.ndarray,
    rng: float | list[float],
    *,
    threshold: float,
    relative: float | None,
    meas: Measurement,
    scale: int,
    reference: Callable[[], MedImage],
    err_before: np.ndarray | None = None,
) -> str | None:
    """The consistency record of an output whose error ``D(SR) − measured`` is ``err`` (and
    ``err_before`` the projection, when one ran), into ``cons``: the statistics over the pixels
    that hold data (``over``, when some hold none), the bicubic reference's p99 when the
    output's exceeds ``threshold`` (``reference()`` builds that reference only then), and
    whether it is ``exceeded``. Returns the finding (a :class:`ConsistencyWarning`'s text) when
    it is, else None. Every in-plane path (a model's, zero-shot) judges its output here.

    An image over time (``rng``: one per time point, each time point's own range): each time
    point judged on its own (``time_points``, each what that time point run on its own
    records), at the top the one that disagrees most (exceeded first, then the highest p99:
    ``time_point``), ``exceeded_time_points`` those that exceed."""
    no_data = no_data_mask(measured)  # their error is 0: no evidence of agreement
    held = None if no_data is None else ~no_data.reshape(err.shape)
    refs: list[np.ndarray] = []

    def reference_error() -> np.ndarray:  # |D(bicubic) − measured|, built once when needed
        if not refs:
            refs.append(np.abs(consistency_error(reference(), measured, meas, scale)))
        return refs[0]

    if not isinstance(rng, list):
        _judged(
            cons, err, err_before, held, rng, threshold, relative, measured.units, reference_error
        )
    else:
        records = []
        for t, r in enumerate(rng):
            record: dict[str, Any] = {}
            _judged(
                record, err[t], None if err_before is None else err_before[t],
                None if held is None else held[t], r, threshold, relative, measured.units,
                lambda t=t: reference_error()[t],  # type: ignore[misc]
            )  # fmt: skip
            records.append(record)
        cons.update(_consistency_over_time(records))
    if not cons["exceeded"]:
        return None
    p99, base = float(cons["error"]["p99_rel"]), cons.get("bicubic_p99_rel")
    extra = f", {p99 / base:.1f}x bicubic interpolation's" if base else ""
    which = _exceeded_at(cons, len(rng)) if isinstance(rng, list) else ""
    return (
        f"the upscaled image disagrees with the input{which}: 99th percentile of "
        f"|degrade(SR) - input| is {cons['error']['p99']:.4g} {measured.units} "
        f"({p99:.1%} of the input range{extra}; threshold {threshold:.0%}) "
        f"for the assumed degradation {meas.describe()}"
    )


def _consistency_over_time(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The consistency record of an image over time from its time points' own (in-plane's and
    through-plane's): at the top the one that disagrees most (exceeded first, then the highest
    p99: :func:`_worst_of`), ``exceeded_time_points`` those that exceed."""
    return {
        **_worst_of(records, lambda r: (r["exceeded"], r["error"]["p99_rel"])),
        "exceeded_time_points": [t for t, r in enumerate(records) if r["exceeded"]],
    }


def _exceeded_at(record: dict[str, Any], n: int) -> str:
    """`` at time point(s) … of n``: where a consistency check of an image over time was
    exceeded (``exceeded_time_points``; the worst named when several)."""
    each = record["exceeded_time_points"]
    words = ", ".join(str(t + 1) for t in each)
    which = f" at time point{'s' if len(each) > 1 else ''} {words} of {n}"
    if len(each) > 1:
        which += f" (the worst, {record['time_point'] + 1}:)"
    return which


def _judged(
    cons: dict[str, Any],
    err: np.ndarray,
    err_before: np.ndarray | None,
    held: np.ndarray | None,
    rng: float,
    threshold: float,
    relative: float | None,
    units: str,
    reference_error: Callable[[], np.ndarray],
) -> None:
    """:func:`judge_consistency`'s record of one volume into ``cons``."""
    if held is not None:
        cons["over"] = f"the {int(held.sum())} input pixels that hold data"
    if err_before is not None:
        cons["error_before"] = _error_stats(err_before, rng, threshold, units, held)
    cons["error"] = _error_stats(err, rng, threshold, units, held)
    p99 = float(cons["error"]["p99_rel"])
    base = None
    if relative and p99 > threshold:  # only then is the bicubic reference needed
        ref_err = reference_error()
        base = float(np.percentile(ref_err if held is None else ref_err[held], 99)) / rng
        cons["bicubic_p99_rel"] = round(base, 6)
    cons["relative"] = relative
    cons["exceeded"] = consistency_exceeded(p99, base, threshold, relative)


def physics_from_header(image: MedImage) -> tuple[Measurement | None, str]:
    """The acquisition physics a DICOM header states, if any.

    MR → ``kspace`` (an MR image *is* a truncated k-space measurement). When the header's
    AcquisitionMatrix is smaller than Rows/Columns the scanner already zero-fill interpolated by
    that ratio; it is recorded in the returned description. Anything else (CT, radiographs,
    ultrasound, formats without a header) → ``None``: unknown physics.
    """
    if modality_group(image.modality) != "MR":
        return None, "unknown"
    note = "header: MR"
    datasets = image.meta.get("datasets") or []
    ds = datasets[0] if datasets else None
    try:
        acq = [int(v) for v in (getattr(ds, "AcquisitionMatrix", None) or []) if int(v) > 0]
        rows = int(getattr(ds, "Rows", 0) or 0)
        if acq and rows:
            note += f", acquired {max(acq)} of {rows} rows (scanner interpolation ×{rows / max(acq):.2g})"
    except (TypeError, ValueError):
        pass
    return resolve_measurement("kspace", 2), note


def resolve_physics(
    degradation: str | dict[str, Any] | Measurement | None, image: MedImage, scale: int
) -> tuple[Measurement | None, str]:
    """The user-stated physics: ``None``/``"none"`` → unknown; ``"auto"`` → from the header
    (:func:`physics_from_header`); a kind, a ``{"kind", "params"}`` dict or a Measurement → that.
    Returns ``(measurement or None, where it came from)``."""
    if degradation is None or (
        isinstance(degradation, str) and degradation.strip().lower() in ("none", "")
    ):
        return None, "unknown"
    if isinstance(degradation, str) and degradation.strip().lower() == "auto":
        meas, note = physics_from_header(image)
        if meas is None:
            return None, "unknown"
        return _signed_kspace(resolve_measurement(meas.kind, scale, image.modality), image), note
    meas = resolve_measurement(degradation, scale, image.modality)
    if meas.through_plane:
        raise InvalidParameterError(
            f"degradation {meas.kind!r} is through-plane physics, not in-plane: for a thick-slice "
            "volume use --through-plane, which takes the slice profile from --profile and "
            "--slice-thickness (not from --degradation)"
        )
    return _signed_kspace(meas, image), "given"


def _signed_kspace(meas: Measurement, image: MedImage) -> Measurement:
    """A ``kspace`` measurement of an image with negative measured values (a CT in HU, a
    phase-corrected MR) as the truncation of a *real* image: a magnitude cannot be negative, and
    measuring the output's magnitude against it reported errors of ~400 HU on a CT that the
    projection (which treats such planes as real) had made consistent. Warns."""
    if meas.kind != "kspace" or "image" in meas.params:
        return meas
    mask, low = no_data_fill(image)  # the darkest measured value (padding left out)
    darkest = float(np.min(low))  # an image over time: that of its darkest time point
    if mask is None:
        darkest = float(np.nanmin(image.array)) if image.array.size else 0.0
    if not darkest < 0:
        return meas
    warnings.warn(
        "the input has negative values, so it is no magnitude image: k-space data is taken as "
        "the truncation of a real image",
        MedSRWarning,
        stacklevel=3,
    )
    return resolve_measurement(
        {"kind": "kspace", "params": {**meas.params, "image": "real"}}, meas.scale
    )


def physics_kind(
    degradation: str | dict[str, Any] | Measurement | None, modality: str | None
) -> str | None:
    """The kind of in-plane physics :func:`resolve_physics` will state for an image of
    ``modality`` — known before the image is read (a PACS series from its query, a batch item):
    ``"auto"`` → ``kspace`` for MR, ``None`` otherwise; ``"default"`` → the modality's default
    kind (:func:`medsr.degradations.default_kind`: ``kspace`` for MR, as :func:`resolve_physics`
    resolves it); a stated kind → that kind."""
    if degradation is None:
        return None
    if isinstance(degradation, Measurement):
        return degradation.kind
    if isinstance(degradation, dict):
        return str(degradation.get("kind") or "").strip().lower() or None
    text = str(degradation).strip().lower()
    if text in ("none", ""):
        return None
    if text == "auto":
        return "kspace" if modality_group(modality or "OT") == "MR" else None
    if text == "default":
        from medsr.degradations import default_kind

        return default_kind(modality)
    return text


class DetailCheckWarning(UserWarning):
    """A learned model's detail failed the self-check one scale down and was scaled down."""


#: the self-check scales the network's detail down when its least-squares fit one scale down
#: says less than this fraction of it is right (see :func:`detail_self_check`)
SELF_CHECK_GAIN_BELOW = 0.5
#: ... and when the full-scale check's fit says less than this (:func:`detail_full_check`)
FULL_CHECK_GAIN_BELOW = SELF_CHECK_GAIN_BELOW
#: the full-scale check fits ``g`` on at most this many input pixels, from at most
#: FULL_CHECK_PLANES planes spread over a volume, each cropped to its centre (four 256² centres
#: of a 512² volume, one 512² centre of a plane): ``g`` is one least-squares ratio, and its
#: lanczos pass and degradations then cost ~1 ms a slice on a 9-slice volume
FULL_CHECK_MAX_PIXELS = 2**18
FULL_CHECK_PLANES = 4
#: the best classical peer of each base interpolator: what a learned model's detail is added to
#: when the self-check scales it down (lanczos beats bicubic on every validation image; for
#: k-space data zero-filled k-space is the peer and the base)
DETAIL_PEER = {"bicubic": "lanczos", "kspace": "kspace"}
#: an expensive forward model (sparse-view CT: :meth:`Measurement.work`): ``--consistency auto``
#: projects only when the projection's estimated samples stay under this (~100 s on two CPU cores;
#: a 128² slice at ×2 projects, a 512² slice at ×2 — about an hour — does not: ``on`` still does),
#: and the consistency summary measures no more planes than this many samples allow (at least one)
CONSISTENCY_AUTO_WORK = 2.0e9
CONSISTENCY_MEASURE_WORK = 2.0e9
#: planes smaller than this (after degrading the input once more) are not self-checked
SELF_CHECK_MIN_SIZE = 16
#: the self-check looks at most this many input pixels: evenly spaced planes of a volume and,
#: for a plane larger than this, its centre (α is one least-squares fit; 2²⁰ pixels pin it down,
#: and the check's network pass then costs at most 2²⁰/s² pixels however large the input)
SELF_CHECK_MAX_PIXELS = 2**20


@dataclass(frozen=True)
class ScaleDown:
    """The input one scale down, where the truth is known (:func:`one_scale_down`)."""

    #: the input's planes looked at (``planes`` of them; the centre ``region`` of each), its no
    #: data filled with its darkest measured value (what the network sees there)
    small: MedImage
    #: ``small`` degraded once more by ``kind`` (``scale`` times coarser)
    lower: MedImage
    #: ``(C, Z, Y, X)`` no-data pixels of ``small`` (None: none), for the checks to leave out
    padding: np.ndarray | None
    kind: str
    planes: int
    region: tuple[int, int]


def one_scale_down(image: MedImage, s: int, physics: Measurement | None) -> ScaleDown | None:
    """The input degraded once more — the stated physics' own forward model, else bicubic —
    on at most :data:`SELF_CHECK_MAX_PIXELS` of its pixels (evenly spaced planes of a volume, the
    centre of a larger plane): what the detail self-check (:func:`detail_self_check`) and the
    error bound's calibration (:func:`medsr.safeguards.error_bound`) upscale back and compare
    with the input. ``None`` when a plane one scale down would be smaller than
    :data:`SELF_CHECK_MIN_SIZE`."""
    from medsr.degradations import degrade_image

    nz, h, w = image.array.shape[-3:]
    h2, w2 = (h // s) * s, (w // s) * s
    if h2 // s < SELF_CHECK_MIN_SIZE or w2 // s < SELF_CHECK_MIN_SIZE:
        return None
    ys, xs = _centre(h2, s, w2), _centre(w2, s, h2)
    ch, cw = ys.stop - ys.start, xs.stop - xs.start
    zs = sample_planes(nz, ch * cw, SELF_CHECK_MAX_PIXELS)
    n = nz if isinstance(zs, slice) else len(zs)
    # padding (a CT's fill outside the reconstruction circle, DICOM pixel padding) holds no data:
    # it is degraded as the darkest measured value (what the network sees there, and what
    # the consistency check uses) and left out of the fit. Degraded as itself, its step of
    # ~1000–2000 HU below air would make the check judge the model on an edge no scanner
    # measures (default-x2 on a head CT: α 0.11 with its fill, 0.93 without)
    filled, pad, _ = fill_no_data(_planes_of(image, zs))
    region = filled.array[..., ys, xs]
    small = image.replace(array=np.ascontiguousarray(region), meta={})
    kind = physics.kind if physics is not None else "bicubic"
    lower = None
    if physics is not None:
        # the stated physics' own forward model, as the consistency check applies it (the same
        # values as the registry's simulator of each kind, but for ``ultrasound``, whose
        # simulator decimates only the lateral axis: as stated physics it is the lateral beam
        # blur, then ↓s on both axes)
        from medsr.safeguards.consistency import degrade_planes

        try:
            planes = degrade_planes(physics, small.array.reshape(-1, ch, cw))
            lower = small.resampled(planes.reshape(*small.array.shape[:-2], ch // s, cw // s))
        except Exception:  # a forward model that cannot run at this size: fall back to bicubic
            lower = None
    if lower is None:
        lower = degrade_image(small, "bicubic", s, generator=0)
    region_pad = None
    if pad is not None:
        region_pad = np.ascontiguousarray((pad if image.channels else pad[None])[..., ys, xs])
    return ScaleDown(small, lower, region_pad, kind, n, (ch, cw))


def detail_self_check(
    image: MedImage, upscaler: Any, physics: Measurement | None = None
) -> dict[str, Any]:
    """How much of a learned model's detail holds up one scale down, on this image itself.

    The input is degraded once more (the stated physics, else bicubic), upscaled back by the
    model and by its base interpolator, and the model's detail ``r = model − base`` is fitted by
    least squares to what the input shows there (``input − base``): ``α = ⟨r, input − base⟩ /
    ⟨r, r⟩`` (the base is the one the model's own pass computed). ``α ≈ 1``: the detail is right
    at that scale; ``α ≈ 0``: it is invented (e.g. ripples a blind model adds to a smooth
    thin-slice CT). When ``α`` is below :data:`SELF_CHECK_GAIN_BELOW` (``applied``) the output
    becomes the base's best classical peer (:data:`DETAIL_PEER`: lanczos for bicubic) plus the
    detail scaled by its least-squares gain over that peer, ``g = ⟨r, input − peer⟩ / ⟨r, r⟩``
    clipped to [0, 1] (``gain``, ``over``): with no trust in the detail the output is the best
    classical interpolation. Otherwise the output is left as the model made it — the check is
    a safety net, not a tuner (one scale down it over- or under-estimates detail on noisy
    images: it only acts on a clear failure). Costs one model run on ``1/scale²`` of the pixels it looks at: at most
    :data:`SELF_CHECK_MAX_PIXELS` input pixels (evenly spaced planes of a volume; the centre of
    a larger plane), so the check's cost does not grow with the volume.
    """
    from medsr.inference.planes import PlaneUpscaler, _as_planes

    s = upscaler.scale
    down = one_scale_down(image, s, physics)
    if down is None:
        return {"checked": False, "reason": "image too small for a check one scale down"}
    small, lower, region_pad, kind = down.small, down.lower, down.padding, down.kind
    n, nz, ch, cw = down.planes, image.array.shape[-3], *down.region
    model = PlaneUpscaler(upscaler, s)  # the network shared; its base interpolation kept (one pass)
    job = model.run_job(model.prepare(lower, keep_base=True))
    assert job.base is not None
    truth = _as_planes(small.channel_first(), job.per_plane_channels)
    c = 2 * s  # borders: the degradation's edge handling, not the model
    data = None  # the measured pixels of each plane (None: all)
    if region_pad is not None:
        data = ~_as_planes(region_pad, job.per_plane_channels)

    def detail(
        k: int,
    ) -> tuple[np.ndarray, np.ndarray]:  # float64, one plane: no volume temporaries
        b = job.base[k, ..., c:-c, c:-c].astype(np.float64)  # type: ignore[index]
        r = job.out[k, ..., c:-c, c:-c] - b
        if data is not None:  # padding: no detail to judge
            r *= data[k, ..., c:-c, c:-c]
        return r, b

    # an image over time: one fit per time point (its planes: time-major), each as that time
    # point on its own gets it; the series' sums let one phase's detail decide for another's
    groups = _time_points(image)
    per_group = job.total // groups
    num, den = [0.0] * groups, [0.0] * groups
    # element-wise sums, not np.vdot: numpy's OpenBLAS threads spin on both cores for a while
    # after a large BLAS call, and slowed the network pass that follows from 106 to 171 ms
    for k in range(job.total):
        r, b = detail(k)
        den[k // per_group] += float(np.sum(r * r))
        num[k // per_group] += float(np.sum(r * (truth[k, ..., c:-c, c:-c] - b)))
    alpha = [num[g] / den[g] if den[g] > 0 else None for g in range(groups)]
    over = DETAIL_PEER.get(upscaler.base_name, upscaler.base_name)
    alpha_peer = [0.0 if a is None else a for a in alpha]
    low = [g for g, a in enumerate(alpha) if a is not None and a < SELF_CHECK_GAIN_BELOW]
    if low and over != upscaler.base_name:  # the gain over the peer
        peer = PlaneUpscaler(over, s, device=upscaler.device.type).upscale(lower)
        peer_planes = _as_planes(peer.channel_first(), job.per_plane_channels)
        num_peer = [0.0] * groups
        for k in range(job.total):
            if k // per_group not in low:
                continue
            r, _ = detail(k)
            num_peer[k // per_group] += float(
                np.sum(r * (truth[k, ..., c:-c, c:-c] - peer_planes[k, ..., c:-c, c:-c]))
            )
        for g in low:
            alpha_peer[g] = num_peer[g] / den[g]
    records = [
        _decision(a, alpha_peer[g], SELF_CHECK_GAIN_BELOW, over, kind)
        if a is not None
        else {
            "checked": True,
            "alpha": None,
            "applied": False,
            "reason": "the model adds no detail",
        }
        for g, a in enumerate(alpha)
    ]
    record = records[0] if image.channels != "time" else _over_time(records)
    if record.get("alpha") is None and image.channels != "time":
        return record
    return {**record, "planes": f"{n} of {nz}", "region": [ch, cw]}


def _time_points(image: MedImage) -> int:
    """How many time points the detail checks fit one by one: an image over time's
    (``channels="time"``), else 1 (a colour image's channels are seen together)."""
    return int(image.array.shape[0]) if image.channels == "time" else 1


def _over_time(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The record of a detail check of an image over time from its time points' own
    (``time_points``, each what that time point run on its own records): at the top that of
    the time point whose detail holds up least (``time_point``, from 0; lowest ``alpha``), so
    ``applied`` says whether any time point's detail was scaled (``applied_time_points``)."""
    worst = _worst_of(records, lambda r: (r.get("alpha") is not None, -(r.get("alpha") or 0.0)))
    applied = [t for t, r in enumerate(records) if r.get("applied")]
    return {**worst, "applied_time_points": applied}


def _gains(record: dict[str, Any]) -> float | list[float | None] | None:
    """The gain a detail check's ``record`` scales the detail by: ``None`` when it did not act;
    an image over time: one per time point, ``None`` where that time point's detail is kept
    (a float when it is the same for all)."""
    if not record.get("applied"):
        return None
    each = record.get("time_points")
    if each is None:
        return float(record["gain"])
    gains = [float(r["gain"]) if r.get("applied") else None for r in each]
    return gains[0] if len(set(gains)) == 1 else gains


def _which_time_points(record: dict[str, Any]) -> str:
    """`` (time point(s) … of T)``: where a check of an image over time acted (else "")."""
    each = record.get("time_points")
    if each is None:
        return ""
    applied = record.get("applied_time_points") or []
    if len(applied) == len(each):
        return f" (all {len(each)} time points)"
    words = ", ".join(str(t + 1) for t in applied)
    return f" (time point{'s' if len(applied) > 1 else ''} {words} of {len(each)})"


def _worst_of(
    records: list[dict[str, Any]], score: Callable[[dict[str, Any]], Any]
) -> dict[str, Any]:
    """The record of a statistic of an image over time from its time points' own
    (``time_points``, each what that time point run on its own records): at the top that of
    the time point whose ``score`` is highest (``time_point``, from 0)."""
    worst = max(range(len(records)), key=lambda t: score(records[t]))
    return {**records[worst], "time_point": worst, "time_points": records}


def _map_summary(
    values: np.ndarray,
    none: np.ndarray | None,
    rng: float | list[float],
    threshold: float,
    units: str,
    over: str | None = None,
) -> dict[str, Any]:
    """:func:`summarize_map` of a map over the voxels that hold data (``none``: those kept
    exact); an image over time's ``(T, Z, Y, X)`` map (``rng``: one per time point): each time
    point's, the one whose p99 is highest at the top (:func:`_worst_of`). ``over``: said in
    each record that has voxels kept exact (``{n}``: how many hold data)."""

    def summary(v: np.ndarray, kept: np.ndarray | None, r: float) -> dict[str, Any]:
        record = summarize_map(
            v if kept is None else v[~kept], data_range=r, threshold_rel=threshold, units=units
        )
        if over is not None and kept is not None:
            record["over"] = over.format(n=int(kept.size - kept.sum()))
        return record

    if not isinstance(rng, list):
        return summary(values, none, rng)
    records = [summary(values[t], None if none is None else none[t], r) for t, r in enumerate(rng)]
    return _worst_of(records, lambda r: r["p99_rel"])


def _scaled_spread(std: np.ndarray, gain: float | list[float | None]) -> np.ndarray:
    """An uncertainty map scaled as the detail is by ``gain`` (:func:`_gains`); an image over
    time's ``(T, Z, Y, X)`` map each time point by its own gain (kept where ``None``)."""
    if not isinstance(gain, list):
        return (std * float(gain)).astype(np.float32)
    if std.shape[0] != len(gain):
        raise ValueError(f"{len(gain)} gains, one per time point, for a map of shape {std.shape}")
    out = std.copy()
    for t, g in enumerate(gain):
        if g is not None:
            out[t] = std[t] * g
    return out


def calibrate_error_bound(
    image: MedImage,
    upscaler: Any,
    physics: Measurement | None,
    *,
    consistency: str,
    self_check: bool,
    iterations: int,
    tol: float,
) -> dict[str, Any]:
    """The factor ``k`` of the error bound (:mod:`medsr.safeguards.error_bound`), measured where
    the truth is known: the input one scale down (:func:`one_scale_down`) upscaled back by this
    pipeline with the same model, physics and settings, with its uncertainty map; ``k`` is the
    :data:`~medsr.safeguards.error_bound.COVERAGE` quantile of ``|error| / √(spread² +
    noise²)`` there (a border of ``2·scale`` px and no-data pixels left out). ``{"calibrated":
    False, "reason": ...}`` when it cannot be measured."""
    from medsr.safeguards.error_bound import calibration_record, image_noise

    s = upscaler.scale
    down = one_scale_down(image, s, physics)
    if down is None:
        return {"calibrated": False, "reason": "image too small for a calibration one scale down"}
    sr, _ = upscale_with_safeguards(
        down.lower, s, upscaler, consistency=consistency, maps=True,
        tta=bool(upscaler.loaded.learned), degradation=physics, ood=False, warn=False,
        iterations=iterations, tol=tol, self_check=self_check, error_bound=False,
    )  # fmt: skip
    over_time = image.channels == "time"
    std = (sr.meta.get("maps") or {}).get("uncertainty")
    if std is None:  # an interpolator's spread is 0 (flip/rotation-equivariant)
        std = np.zeros(sr.array.shape if over_time else sr.array.shape[-3:], dtype=np.float32)
    c = 2 * s  # the degradation's edge handling, not the model

    def calibrated(
        error: np.ndarray, spread: np.ndarray, lower: np.ndarray, pad: np.ndarray | None
    ) -> dict[str, Any]:  # one volume's k: (Z, Y, X) error and spread, (C, Z, y, x) lower
        keep = np.zeros(error.shape, dtype=bool)
        keep[..., c:-c, c:-c] = True
        if pad is not None:
            keep &= ~pad.any(axis=0)
        return calibration_record(
            error, spread, image_noise(lower), keep,
            reason="no pixel to calibrate on one scale down",
            calibration={
                "degradation": down.kind,
                "planes": f"{down.planes} of {image.array.shape[-3]}",
                "region": list(down.region),
                "pixels": int(keep.sum()),
            },
        )  # fmt: skip

    if not over_time:
        error = np.abs(sr.channel_first() - down.small.channel_first()).mean(axis=0)  # (Z, Y, X)
        return calibrated(error, std, down.lower.channel_first(), down.padding)
    # an image over time: each time point's k, from its own error, spread and noise
    records = [
        calibrated(
            np.abs(sr.array[t] - down.small.array[t]),
            std[t],
            down.lower.array[t][None],
            None if down.padding is None else down.padding[t][None],
        )
        for t in range(image.array.shape[0])
    ]
    return {"calibrated": any(r["calibrated"] for r in records), "time_points": records}


def _error_bound(
    image: MedImage,
    std: np.ndarray,
    upscaler: Any,
    physics: Measurement | None,
    setting: str,
    self_check: bool,
    iterations: int,
    tol: float,
    rng: float | list[float],
    threshold: float,
    pad: np.ndarray | None,
    none: np.ndarray | None,
) -> tuple[np.ndarray | None, dict[str, Any]]:
    """The ``error_bound`` map of an output whose uncertainty map is ``std`` and its summary
    (:func:`calibrate_error_bound`); ``(None, why)`` when it cannot be calibrated. ``pad``: the
    input's no-data mask (:func:`no_data_mask`), ``none`` the output pixels of its no-data
    pixels (:func:`_output_no_data`): kept exact in the output, so their bound is 0. An image
    over time (``rng``: one per time point): each time point's bound with its own ``k`` and
    noise, ``(T, Z, Y, X)`` (NaN — no map — for a time point that cannot be calibrated), and
    its record in ``time_points`` (at the top the one whose bound's p99 is highest)."""
    from medsr.safeguards.error_bound import bound_summary, error_bound, image_noise

    info = calibrate_error_bound(
        image, upscaler, physics, consistency=setting, self_check=self_check,
        iterations=iterations, tol=tol,
    )  # fmt: skip
    if not info.get("calibrated"):
        return None, info
    if not isinstance(rng, list):
        noise = image_noise(image.channel_first(), None if pad is None else ~pad)
        bound = error_bound(std, noise, float(info["factor"]))
        return bound, bound_summary(info, bound, noise, none, rng, threshold, image.units)
    noises = _time_point_noises(image, pad)
    return _bounds_over_time(info, std, noises, noises, none, rng, threshold, image.units)


def _bounds_over_time(
    info: dict[str, Any],
    spread: np.ndarray,
    noises: list[np.ndarray],
    per_plane: list[np.ndarray],
    none: np.ndarray | None,
    rngs: list[float],
    threshold: float,
    units: str,
) -> tuple[np.ndarray, dict[str, Any]]:
    """The ``(T, Z, Y, X)`` error bound of an image over time whose calibration ``info`` has a
    record per time point (``time_points``), each time point's with its own ``k``, spread
    (``spread[t]``) and noise (``noises[t]``, one per input plane; ``per_plane[t]`` one per
    plane of the map), NaN — no map — where one cannot be calibrated; and its record, each time
    point's (:func:`~medsr.safeguards.error_bound.bound_summary`, ``none[t]`` kept exact) with
    the one whose bound's p99 is highest at the top (:func:`_worst_of`). In-plane's and
    through-plane's."""
    from medsr.safeguards.error_bound import bound_summary, error_bound

    full = np.full(spread.shape, np.nan, dtype=np.float32)
    records = []
    for t, record in enumerate(info["time_points"]):
        if record.get("calibrated"):
            bound = error_bound(spread[t], per_plane[t], float(record["factor"]))
            own = None if none is None else none[t]
            record = bound_summary(record, bound, noises[t], own, rngs[t], threshold, units)
            full[t] = bound
        records.append(record)
    return full, _worst_of(
        records, lambda r: (r.get("calibrated", False), (r.get("map") or {}).get("p99_rel", 0))
    )


def _output_no_data(
    pad: np.ndarray | None, scale: int, over_time: bool = False
) -> np.ndarray | None:
    """The ``(Z, Y·s, X·s)`` output pixels of the input's no-data pixels ``pad`` (``(C, Z, Y,
    X)``, :func:`no_data_mask`; where no channel holds data), which the output keeps exact;
    ``over_time``: an image over time's, each time point's own ``(T, Z, Y·s, X·s)``."""
    from medsr.io.padding import block_mask

    if pad is None:
        return None
    return block_mask(np.asarray(pad if over_time else pad.all(axis=0)), scale)


def _consistency_map(
    err: np.ndarray, image: MedImage, scale: int, pad: np.ndarray | None
) -> np.ndarray:
    """``|err|`` (the consistency error on the input grid) as a ``(Z, Y·s, X·s)`` float32 map on
    the output grid, each input pixel's value over its block; for a colour image the mean over
    the channels that hold data at each pixel (``pad``: the input's no-data mask): a channel
    with none there has no error there, not an error of 0 (:func:`mean_over_held`). An image
    over time: ``(T, Z, Y·s, X·s)``, each time point's own."""
    cmap = np.abs(err)
    if image.channels == "RGB":
        cmap = mean_over_held(cmap, pad)
    return np.repeat(np.repeat(cmap, scale, axis=-2), scale, axis=-1).astype(np.float32)


def _decision(alpha: float, gain: float, below: float, over: str, kind: str) -> dict[str, Any]:
    """The record of a detail check that measured ``alpha``: it acts (``applied``) when
    ``alpha < below``, with ``gain`` clipped to [0, 1] over the classical peer ``over``."""
    applied = alpha < below
    return {
        "checked": True,
        "alpha": round(alpha, 4),
        "applied": bool(applied),
        "gain": round(min(max(gain, 0.0), 1.0), 4) if applied else 1.0,
        "over": over if applied else None,
        "degradation": kind,
    }


def detail_full_check(
    measured: MedImage,
    sr: MedImage,
    upscaler: Any,
    physics: Measurement | None = None,
    sr_error: np.ndarray | None = None,
    peer: MedImage | None = None,
) -> dict[str, Any]:
    """How much of a learned model's departure from classical interpolation the input itself
    confirms, at full scale.

    The output ``y`` and the best classical peer ``p`` of the model's base (:data:`DETAIL_PEER`:
    lanczos) are degraded back to the input's grid by ``D`` (the stated physics, else bicubic, as
    in :func:`detail_self_check`), and the blend ``p + g·(y − p)`` that agrees best with the
    input ``x`` there is fitted by least squares: ``g = ⟨D y − D p, x − D p⟩ / ‖D y − D p‖²``.
    This measures the part of the model's detail below the input's Nyquist frequency, at the
    scale it is used. When ``g`` is below :data:`FULL_CHECK_GAIN_BELOW` (``applied``) the output
    becomes that blend, ``g`` clipped to [0, 1] (``gain``, ``over``). The self-check one scale
    down assumes the image looks alike one scale down; a smooth, oversampled image does not:
    on the thin-slice head CT of the validation set (0.43 mm pixels) `default-x2`'s detail holds
    up one scale down (α 0.93) but at full scale it sharpens what the scanner smoothed, 12 dB
    below bicubic (``g`` 0.09).

    ``measured`` and ``sr``: the same planes; padding is left out
    (:func:`medsr.safeguards.consistency.consistency_error`). ``sr_error``: ``sr``'s consistency
    error under ``physics`` when already computed; ``peer``: the peer's interpolation of
    ``measured`` when already computed. A zero-filled k-space base (stated k-space
    physics) is not checked: its peer is itself, the detail lies outside the measured band, and
    the consistency projection follows.
    """
    from medsr.inference.planes import PlaneUpscaler

    over = DETAIL_PEER.get(upscaler.base_name, upscaler.base_name)
    if over == upscaler.base_name:
        reason = f"{upscaler.base_name} base: the detail lies outside the measured band"
        return {"checked": False, "reason": reason}
    s = upscaler.scale
    meas = physics if physics is not None else resolve_measurement("bicubic", s)
    if peer is None:
        peer = PlaneUpscaler(over, s, device=upscaler.device.type, clip=upscaler.clip).upscale(
            measured
        )
    e_p = consistency_error(peer, measured, meas, s).astype(np.float64)
    if sr_error is None:
        sr_error = consistency_error(sr, measured, meas, s)
    d = sr_error - e_p  # D y − D p
    if measured.channels != "time":
        return _full_decision(d, e_p, _data_range(measured), over, meas.kind)
    # an image over time: one fit per time point, each as that time point on its own gets it
    pad = no_data_mask(measured)
    records = [
        _full_decision(d[t], e_p[t], _data_range(measured, pad, time_point=t), over, meas.kind)
        for t in range(d.shape[0])
    ]
    return _over_time(records)


def _full_decision(
    d: np.ndarray, e_p: np.ndarray, rng: float, over: str, kind: str
) -> dict[str, Any]:
    """:func:`detail_full_check`'s fit of ``g`` on ``d = D y − D p`` and ``e_p = D p − x``
    (``rng``: the input's data range) and its record."""
    den = float(np.sum(d * d))
    if den <= (1e-6 * rng) ** 2 * d.size:
        reason = "no departure from the classical peer in the measured band"
        return {"checked": True, "alpha": None, "applied": False, "reason": reason}
    g = -float(np.sum(d * e_p)) / den
    return _decision(g, g, FULL_CHECK_GAIN_BELOW, over, kind)


def _full_scale_check(
    image: MedImage,
    sr: MedImage,
    upscaler: Any,
    physics: Measurement | None,
    meas: Measurement,
    zs: np.ndarray | slice,
    err_before: Callable[[], np.ndarray],
) -> tuple[dict[str, Any], MedImage | None]:
    """:func:`detail_full_check` as the pipeline runs it: on up to :data:`FULL_CHECK_PLANES`
    planes spread over a volume, each cropped to its centre so that together they hold
    :data:`FULL_CHECK_MAX_PIXELS` input pixels at most, reusing the consistency summary's
    ``err_before()`` (``D(sr) − input`` under ``meas`` on the planes ``zs``, computed on the first
    call) when it is the same measurement of the same pixels — otherwise it is not asked for:
    a check that blends the output makes it moot. Not with unknown physics on a k-space modality. Also
    returns the peer's interpolation of the whole input when the check computed it (a 2-D
    plane or a small volume: it looks at all of it), for :func:`_blend_with_peer` to reuse."""
    if physics is None and meas.kind == "kspace":
        # unknown physics, assumed bicubic: but this modality is acquired in k-space, whose
        # truncation leaves the band the check measures unattenuated up to the input's Nyquist
        # frequency where bicubic attenuates it; the fit would judge the model against the wrong
        # operator (on the k-space MR of benchmarks/faithful.py it drew `fast-x4` towards
        # lanczos, 0.3-0.55 dB below the model)
        return {
            "checked": False,
            "reason": "physics not stated for a k-space modality (--degradation checks it)",
        }, None
    s = upscaler.scale
    d = physics if physics is not None else resolve_measurement("bicubic", s)
    nz, h, w = image.array.shape[-3:]
    fz = _middle_planes(nz, FULL_CHECK_PLANES)
    n = nz if isinstance(fz, slice) else len(fz)
    fy, fx = (
        _centre(h, 1, w, FULL_CHECK_MAX_PIXELS // n),
        _centre(w, 1, h, FULL_CHECK_MAX_PIXELS // n),
    )
    covers = isinstance(fz, slice) and fy.stop - fy.start == h and fx.stop - fx.start == w
    same = covers and isinstance(zs, slice) and d.kind == meas.kind and d.params == meas.params
    over = DETAIL_PEER.get(upscaler.base_name, upscaler.base_name)
    peer = None
    if covers and over != upscaler.base_name:  # the check's peer is the blend's: computed once
        from medsr.inference.planes import PlaneUpscaler

        peer = PlaneUpscaler(over, s, device=upscaler.device.type, clip=upscaler.clip).upscale(
            image
        )
    full = detail_full_check(
        _region_of(image, fz, fy, fx),
        _region_of(sr, fz, slice(fy.start * s, fy.stop * s), slice(fx.start * s, fx.stop * s)),
        upscaler,
        d,
        sr_error=err_before() if same else None,  # D(sr): the summary's, computed once
        peer=peer,
    )
    if full.get("checked"):
        full["planes"] = f"{n} of {nz}"
        full["region"] = [fy.stop - fy.start, fx.stop - fx.start]
    return full, peer


def _blend_with_peer(
    image: MedImage,
    sr: MedImage,
    upscaler: Any,
    gain: float | list[float | None],
    over: str,
    peer: MedImage | None = None,
) -> MedImage:
    """``over + gain·(sr − over)``: the output drawn towards the classical interpolation ``over``
    (``peer``: that interpolation of ``image`` when already computed; padding stays exact: both
    keep it). An image over time: ``gain`` may be one per time point (:func:`_gains`; ``None``:
    that time point kept as it is)."""
    from medsr.inference.planes import PlaneUpscaler

    if peer is None:
        p = PlaneUpscaler(over, upscaler.scale, device=upscaler.device.type, clip=upscaler.clip)
        peer = p.upscale(image)
    arr = _plus_scaled(peer.array, peer.array, sr.array, gain)
    meta = dict(sr.meta)
    derivation = {**meta.get("derivation", {}), "full_scale_gain": _rounded(gain)}
    meta["derivation"] = {**derivation, "full_scale_over": over}
    step = f"blended x{_gain_words(gain)} with {over} (full-scale detail check)"
    return sr.replace(array=arr, meta=meta).with_step(step)


def _plus_scaled(
    p: np.ndarray, b: np.ndarray, sr: np.ndarray, gain: float | list[float | None]
) -> np.ndarray:
    """``p + gain·(sr − b)`` float32 (the detail of ``sr`` over ``b`` scaled, added to ``p``); an
    image over time: ``gain`` may be one per time point (``None``: that time point's ``sr`` kept
    as it is)."""
    if not isinstance(gain, list):
        return (p + np.float32(gain) * (sr - b)).astype(np.float32)
    out = sr.copy()
    for t, g in enumerate(gain):
        if g is not None:
            out[t] = p[t] + np.float32(g) * (sr[t] - b[t])
    return out


def _rounded(gain: float | list[float | None]) -> float | list[float | None]:
    """A gain (or one per time point, :func:`_gains`) as the derivation records it."""
    if isinstance(gain, list):
        return [None if g is None else round(g, 4) for g in gain]
    return round(gain, 4)


def _gain_words(gain: float | list[float | None]) -> str:
    """A gain (or one per time point: ``-`` where kept) as a processing step names it."""
    if isinstance(gain, list):
        return "/".join("-" if g is None else f"{g:.3f}" for g in gain) + " (per time point)"
    return f"{gain:.3f}"


def _middle_planes(nz: int, count: int) -> np.ndarray | slice:
    """``count`` (at least one) evenly spaced plane indices centred in the volume (one plane: the
    middle one), or ``slice(None)`` when the volume has no more planes than that."""
    n = max(1, min(nz, count))
    if n >= nz:
        return slice(None)
    return np.unique(np.round((np.arange(n) + 0.5) * nz / n - 0.5).astype(int))


def _region_of(image: MedImage, zs: np.ndarray | slice, ys: slice, xs: slice) -> MedImage:
    """``image`` restricted to the planes ``zs`` and the rows/columns ``ys``/``xs``, its padding
    entries following them (:func:`_planes_of`)."""
    sub = _planes_of(image, zs)
    if ys == slice(0, sub.array.shape[-2]) and xs == slice(0, sub.array.shape[-1]):
        return sub
    meta = dict(sub.meta)
    recorded = meta.get("nonfinite_mask")
    if isinstance(recorded, np.ndarray) and recorded.shape == sub.array.shape:
        meta["nonfinite_mask"] = np.ascontiguousarray(recorded[..., ys, xs])
    return sub.replace(array=np.ascontiguousarray(sub.array[..., ys, xs]), meta=meta)


def sample_planes(nz: int, plane_pixels: int, budget: int) -> np.ndarray | slice:
    """Evenly spaced plane indices (first and last included) whose pixels total at most
    ``budget`` (at least one plane), or ``slice(None)`` when every plane fits."""
    n = max(1, min(nz, budget // max(plane_pixels, 1)))
    if n >= nz:
        return slice(None)
    return np.unique(np.linspace(0, nz - 1, n).round().astype(int))


def _planes_of(image: MedImage, zs: np.ndarray | slice) -> MedImage:
    """``image`` restricted to the planes ``zs`` (meta kept, its per-slice padding entries
    restricted to the same planes: padding still applies)."""
    if isinstance(zs, slice):
        return image
    return image.replace(
        array=np.ascontiguousarray(image.array[..., zs, :, :]),
        meta=padding_of_planes(image.meta, zs, image.array.shape[-3]),
    )


def _centre(size: int, s: int, other: int, budget: int | None = None) -> slice:
    """The centred part of an axis of ``size`` pixels (a multiple of ``s``) that a check looks
    at: all of it, unless the plane (``size × other``) exceeds ``budget`` pixels (default
    :data:`SELF_CHECK_MAX_PIXELS`), then a centred square-ish crop within that budget."""
    budget = SELF_CHECK_MAX_PIXELS if budget is None else budget
    side = int(np.sqrt(budget))
    if size * other <= budget or size <= side:
        return slice(0, size)
    keep = max(side // s, 2 * SELF_CHECK_MIN_SIZE) * s
    start = ((size - keep) // 2 // s) * s
    return slice(start, start + keep)


def _shrink_detail(
    image: MedImage,
    sr: MedImage,
    upscaler: Any,
    gain: float | list[float | None],
    over: str | None = None,
) -> MedImage:
    """``over + gain·(sr − base)``: the network's detail scaled and added to the classical
    interpolation ``over`` (default: the base itself); an image over time: ``gain`` may be one
    per time point (:func:`_gains`; ``None``: that time point kept as it is).

    For an output made elsewhere (a batch's precomputed output, the test-time augmentation's):
    the one-pass path of :func:`upscale_with_safeguards` scales the detail as the planes come back
    from the model, over the base that pass computed."""
    from medsr.inference.planes import PlaneUpscaler

    def classical(name: str) -> np.ndarray:
        up = PlaneUpscaler(name, upscaler.scale, device=upscaler.device.type, clip=upscaler.clip)
        return up.upscale(image).array

    over = over or upscaler.base_name
    b = classical(upscaler.base_name)
    p = b if over == upscaler.base_name else classical(over)
    arr = _plus_scaled(p, b, sr.array, gain)
    meta = dict(sr.meta)
    derivation = {**meta.get("derivation", {}), "detail_gain": _rounded(gain), "detail_over": over}
    meta["derivation"] = derivation
    step = f"detail scaled x{_gain_words(gain)} over {over} (self-check one scale down)"
    return sr.replace(array=arr, meta=meta).with_step(step)


#: the one pass keeps its bicubic base for the consistency warning's reference while the base
#: takes at most this many bytes (larger outputs recompute it in the rare case it is needed)
KEEP_BASE_BYTES = 256 * 2**20
#: without maps, the consistency summary and warning look at most this many input pixels
#: (evenly spaced whole planes, at least one): the 99th percentile of the error is a statistic
#: of the volume, and the check's cost then stops growing with the number of slices
CONSISTENCY_SAMPLE_PIXELS = 2**20


def _bicubic_reference(
    measured: MedImage, upscaler: PlaneUpscaler, job: PlaneJob | None
) -> MedImage:
    """Plain bicubic interpolation of ``measured`` (the planes the consistency check looks at;
    clipped to their range, padding kept): the base the one pass kept (``job``: kept only when
    the check looks at every plane), else computed now."""
    from medsr.inference.planes import PlaneUpscaler

    if job is not None and job.base is not None:
        return measured.resampled(upscaler.base_array(job, clip=True))
    up = PlaneUpscaler("bicubic", upscaler.scale, device=upscaler.device.type)
    return up.upscale(measured)


def spacing_unstated(image: MedImage, scale: int) -> str | None:
    """The warning for an input that states no pixel spacing (read as 1 mm), or None."""
    if image.meta.get("spacing_source") != "default":
        return None
    return (
        "the input states no pixel spacing (taken as 1 mm): a DICOM output states none "
        f"either, so a viewer shows its pixels at the input's size (×{scale} the field of "
        f"view); other formats record {1 / scale:g} mm, derived from that assumption"
    )


def upscale_with_safeguards(
    image: MedImage,
    scale: int = 2,
    model: str | os.PathLike[str] | LoadedModel | PlaneUpscaler | None = None,
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
    self_check: bool = True,
    ensemble: bool = False,
    error_bound: bool = True,
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
            ``"off"`` only measures; ``"auto"`` (default) projects when the physics is known
            (``degradation`` given, or read from the header). Booleans are accepted.
        maps: attach ``meta["maps"]`` = ``{"consistency": |D(SR) − input| replicated onto the
            output grid, "uncertainty": TTA std}``, each ``(Z, Y, X)`` in the image's units;
            an image over time (``channels="time"``): ``(T, Z, Y, X)``, each time point's maps
            and their statistics (``time_points`` in the summary) as that time point run on
            its own gets them.
        tta: compute the uncertainty map (8× the model's run time); without it no uncertainty.
        degradation: the physics the user states (:func:`resolve_physics`): ``None``/``"none"``
            unknown — the check then assumes the model card's degradation or the modality
            default (:func:`assumed_degradation`) but ``"auto"`` consistency does not project;
            ``"auto"`` from the header; a kind, ``{"kind", "params"}`` or a :class:`Measurement`.
            A ``kspace`` physics makes zero-filled k-space the base interpolator.
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
        self_check: learned models: the detail self-check one scale down
            (:func:`detail_self_check`); the network's detail is scaled down when the check
            says most of it is wrong on this image.
        ensemble: learned models: the output is the mean of the model's outputs for the 8
            flips and 90° rotations of the input, each turned back (the *self-ensemble*, the
            "+" of EDSR+/RCAN+; :func:`~medsr.safeguards.maps.tta_statistics`): 8× the model's
            run time, with ``tta`` no more. Detail that depends on the image's orientation —
            what no anatomy does — averages out; each of the 8 keeps the input's low band,
            padding and local range, so their mean does too. The self-check judges the model
            itself; the full-scale check and the projection act on the mean. A classical
            interpolator is already symmetric: nothing changes.
        error_bound: with ``maps`` and an uncertainty map (or a classical interpolator, whose
            spread is 0 by symmetry: no ``tta`` needed), also the ``error_bound`` map: per
            voxel, the value the error of about 90 % of the voxels stays below, calibrated on
            the input one scale down (:mod:`medsr.safeguards.error_bound`,
            :func:`calibrate_error_bound`: the same pipeline run once more there, on at most
            1/scale² of the input's pixels, its uncertainty map included).
        **upscale_kwargs: ``device``, ``batch_size``, ``clip``, ``tile``, ``precision``,
            ``low_band``, ``range_guard`` of :class:`~medsr.inference.planes.PlaneUpscaler`.

    Returns:
        ``(sr, summary)``: the upscaled MedImage (``meta["safeguards"] = summary``,
        ``meta["provenance"]``, ``meta["derivation"]`` extended, ``meta["maps"]`` when
        ``maps``) and the JSON-able summary.
    """
    from medsr.inference.planes import PlaneUpscaler

    require_image(image, "upscale_with_safeguards", pixels=True)
    setting = consistency_setting(consistency)
    scale = check_scale(scale)
    # every front end's door (web service, batch, PACS bridge, API): an output past the ceiling
    # is refused before the model allocates it, as medsr upscale does
    nz, ny, nx = image.spatial_shape
    check_output_size(image, (nz, ny * scale, nx * scale))
    if output is not None and (tta or samples or ensemble):
        raise InvalidParameterError(
            "a precomputed output cannot be combined with tta, samples or ensemble"
        )
    physics, physics_source = resolve_physics(degradation, image, scale)
    base_name = "kspace" if physics is not None and physics.kind == "kspace" else "bicubic"
    if isinstance(model, PlaneUpscaler):  # a batch's loaded network: shared, not reloaded
        if model.scale != scale:
            raise InvalidParameterError(f"the loaded model is for ×{model.scale}, not ×{scale}")
        upscaler = (
            model if model.base_name == base_name else PlaneUpscaler(model, scale, base=base_name)
        )
    else:
        upscaler = PlaneUpscaler(model, scale, base=base_name, **upscale_kwargs)
    card = upscaler.card
    # an interpolator is symmetric already: the mean over flips/rotations is its one pass
    ensemble_skipped = bool(ensemble) and not upscaler.loaded.learned
    ensemble = bool(ensemble) and upscaler.loaded.learned
    if physics is not None:
        meas, source = physics, physics_source
    else:
        meas, source = assumed_degradation(None, card, scale, image.modality)
    project = setting == "on" or (setting == "auto" and physics is not None)
    # the input's no-data pixels, once for the ranges, summaries and maps below: their output
    # pixels are kept exact, so no statistic of a map counts them
    pad = no_data_mask(image)
    over_time = image.channels == "time"
    # an image over time: each time point's statistics relative to its own range
    rngs = _ranges(image, pad)
    # the consistency error's summary (and the warning) from a bounded sample of planes; a map
    # needs them all
    nz, h, w = image.array.shape[-3:]
    hr_plane = (h * scale, w * scale)
    work = 0.0 if meas.through_plane else meas.work(hr_plane)
    if maps or meas.through_plane:
        zs: np.ndarray | slice = slice(None)
    else:  # at most CONSISTENCY_SAMPLE_PIXELS input pixels, and (an expensive forward model)
        # CONSISTENCY_MEASURE_WORK samples; at least one plane
        n = CONSISTENCY_SAMPLE_PIXELS // (h * w)
        if work:
            n = min(n, int(CONSISTENCY_MEASURE_WORK // work))
        zs = sample_planes(nz, 1, max(1, n))
    skipped = None
    cost = nz * meas.projection_work(hr_plane, iterations)
    if project and setting == "auto" and cost > CONSISTENCY_AUTO_WORK:
        project = False
        skipped = (
            f"the {meas.describe()} consistency projection was not applied: its sparse-view "
            f"forward models of {nz} plane(s) of {hr_plane[0]}x{hr_plane[1]} would take about "
            f"{cost / meas.WORK_RATE / 60:.0f} min on two CPU cores; --consistency on applies it"
        )
    caught: list[str] = []

    def flag(finding: str, category: type[Warning], warning: str | None = None) -> None:
        """A safeguard's finding: into the summary, and (``warn``) a warning to the caller."""
        caught.append(finding)
        if warn:
            warnings.warn(warning or finding, category, stacklevel=3)

    unstated = spacing_unstated(image, scale)
    if unstated:
        flag(unstated, MedSRWarning)
    if ensemble_skipped:
        flag(
            f"--ensemble not applied: {upscaler.name!r} is a classical interpolator, whose mean "
            "over the 8 flips and rotations is its one pass",
            MedSRWarning,
        )
    ood_result: dict[str, Any] = (
        check_distribution(image, card, warn=False, no_data=pad) if ood else {"checked": False}
    )
    if ood_result.get("flag"):
        reasons = "; ".join(ood_result["reasons"])
        flag(
            f"out-of-distribution input: {reasons}",
            OutOfDistributionWarning,
            f"out-of-distribution input for model {card.get('name', model)!r}: {reasons}",
        )

    # the self-check first: its gain scales the detail as the planes come back from the model
    check: dict[str, Any] = {"checked": False}
    gain: float | list[float | None] | None = None  # an image over time: one per time point
    over: str | None = None
    if self_check and upscaler.loaded.learned:
        t2 = time.perf_counter()
        check = detail_self_check(image, upscaler, physics)
        if check.get("applied"):
            msg = (
                f"the model's detail does not hold up one scale down on this image"
                f"{_which_time_points(check)} (self-check alpha {check['alpha']:.2f}): its "
                f"detail was scaled by {check['gain']:.2f} and added to {check['over']} "
                "interpolation"
            )
            flag(msg, DetailCheckWarning)
            gain, over = _gains(check), check.get("over")
        check["ms"] = round((time.perf_counter() - t2) * 1000, 1)

    t0 = time.perf_counter()
    job = None
    if output is not None:
        check_pair(output, image, scale)
        sr, std, unc_info = output, None, {"method": "none", "transforms": 1}
        if gain is not None:
            sr = _shrink_detail(image, sr, upscaler, gain, over)
    elif tta or samples > 0 or ensemble:
        sr, std, unc_info = tta_statistics(
            image,
            scale,
            upscaler,
            tta=tta or ensemble,
            samples=samples,
            sampler=sampler,
            stochastic=bool(card.get("stochastic")),
            ensemble=ensemble,
            spread=bool(tta or samples),  # the ensemble alone: no spread, float32 sum in place
        )
        if gain is not None:
            sr = _shrink_detail(image, sr, upscaler, gain, over)
            if std is not None:
                std = _scaled_spread(std, gain)
    else:  # one pass: the base kept for the consistency reference when it is small enough
        keep = (
            bool(relative)
            and upscaler.base_name == "bicubic"
            and isinstance(zs, slice)  # a sample's reference is cheap to compute afresh
            and image.array.nbytes * scale**2 <= KEEP_BASE_BYTES
        )
        job = upscaler.prepare(image, keep_base=keep, detail_gain=gain, detail_over=over)
        job = upscaler.run_job(job)
        sr, std, unc_info = upscaler.finish(job), None, {"method": "none", "transforms": 1}
    t_model = time.perf_counter() - t0

    t1 = time.perf_counter()
    measured = _planes_of(image, zs)
    errors: list[np.ndarray] = []

    def error_of_sr() -> np.ndarray:  # D(sr) − input under meas on the planes zs, computed once
        if not errors:
            errors.append(consistency_error(_planes_of(sr, zs), measured, meas, scale))
        return errors[0]

    scaled = set(check.get("applied_time_points") or ([0] if check.get("applied") else []))
    if (
        self_check
        and upscaler.loaded.learned
        and len(scaled) < _time_points(image)
        and (physics is None or physics.work(hr_plane) == 0)  # no sparse-view forward models
    ):
        # unless the self-check one scale down scaled the detail already, it is checked at full
        # scale (its time counts in the consistency stage); an image over time: the time points
        # whose detail it did not scale, each on its own
        full, peer = _full_scale_check(image, sr, upscaler, physics, meas, zs, error_of_sr)
        if scaled and full.get("time_points"):
            skip = {"checked": False, "reason": "the self-check one scale down scaled the detail"}
            each = [skip if t in scaled else r for t, r in enumerate(full["time_points"])]
            full = {**_over_time(each), **{k: full[k] for k in ("planes", "region") if k in full}}
        if full.get("applied"):
            msg = (
                f"the model's detail disagrees with the input{_which_time_points(full)} "
                f"(full-scale check: {full['alpha']:.2f} "
                f"of its departure from {full['over']} interpolation holds up): the output is "
                f"{full['over']} plus {full['gain']:.2f} of that departure"
            )
            flag(msg, DetailCheckWarning)
            blend = _gains(full)
            assert blend is not None
            sr = _blend_with_peer(image, sr, upscaler, blend, full["over"], peer)
            if std is not None:
                std = _scaled_spread(std, blend)
            errors.clear()  # the blend's error, not the model's (not computed when unused)
        check["full_scale"] = full
    err_before = error_of_sr()
    cons: dict[str, Any] = {"setting": setting, "applied": project, "threshold_rel": threshold}
    if skipped:
        cons["skipped"] = skipped
        flag(skipped, ConsistencyWarning)
    if not isinstance(zs, slice):
        cons["planes"] = f"{len(zs)} of {nz}"
    if project:
        sr = enforce_consistency(sr, image, meas, scale, iterations=iterations, tol=tol)
        err = consistency_error(_planes_of(sr, zs), measured, meas, scale)
        proj = sr.meta.get("consistency") or {}
        cons.update(method=proj.get("method"), iterations=proj.get("iterations"))
    else:
        err = err_before
    disagrees = judge_consistency(
        cons, measured, err, rngs, threshold=threshold, relative=relative, meas=meas,
        scale=scale, reference=lambda: _bicubic_reference(measured, upscaler, job),
        err_before=err_before if project else None,
    )  # fmt: skip
    t_cons = time.perf_counter() - t1
    if disagrees:
        flag(disagrees, ConsistencyWarning)

    unc: dict[str, Any] = dict(unc_info)
    none = (
        _output_no_data(pad, scale, over_time)
        if std is not None or (maps and error_bound)
        else None
    )
    if std is not None:  # an image over time: each time point's (its map is its own)
        unc["map"] = _map_summary(std, none, rngs, uncertainty_threshold, image.units)
    summary: dict[str, Any] = {
        "model": card.get("name", str(model)),
        "scale": scale,
        "degradation": {**meas.as_dict(), "describe": meas.describe(), "source": source},
        "physics": physics.kind if physics is not None else "unknown",
        "base_interpolator": base_name,
        "consistency": cons,
        "self_check": {k: v for k, v in check.items() if k != "ms"},
        "uncertainty": unc,
        "ood": ood_result,
        "warnings": caught,
        "timing_ms": {"model": round(t_model * 1000, 1), "consistency": round(t_cons * 1000, 1)},
    }
    if unc_info.get("ensemble"):
        summary["ensemble"] = unc_info["ensemble"]
    bound = None
    # an interpolator is flip/rotation-equivariant: its spread is 0 without running it 8 times
    spread = std
    if spread is None and not upscaler.loaded.learned:
        spread = np.zeros(sr.array.shape if over_time else sr.array.shape[-3:], np.float32)
    if maps and error_bound and spread is not None:
        t3 = time.perf_counter()
        bound, summary["error_bound"] = _error_bound(
            image, spread, upscaler, physics, setting, self_check, iterations, tol, rngs,
            uncertainty_threshold, pad, none,
        )  # fmt: skip
        summary["timing_ms"]["error_bound"] = round((time.perf_counter() - t3) * 1000, 1)
    meta = {**sr.meta, "safeguards": summary}
    meta.pop("consistency", None)
    if maps:
        cmap = _consistency_map(err, image, scale, pad)
        if image.channels == "RGB":  # one map for a colour image: what its statistics are not
            cons["map"] = (
                f"the mean of |error| over the {_channel_word(image)} that hold data at each "
                "pixel (the statistics: over every one)"
            )
        meta["maps"] = {"consistency": cmap}
        if std is not None:
            meta["maps"]["uncertainty"] = std
        if bound is not None:
            meta["maps"]["error_bound"] = bound
    sr = sr.replace(meta=meta)
    record = provenance(
        model=upscaler.loaded,
        card=card,
        scale=scale,
        degradation=meas.describe(),
        consistency=consistency_label(cons),
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
    **write_options: Any,
) -> Path:
    """Write an output of :func:`upscale_with_safeguards` (what ``medsr upscale`` and
    ``medsr batch`` both do) and return the path written (``write_options``: the writer's, e.g.
    ``dtype`` of NIfTI, :func:`writer_options`).

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
    written = save_image(clean, target, overwrite=overwrite, **write_options)
    if maps_dir is not None and maps:
        write_maps(maps, maps_dir, like=clean, summary=summary, overwrite=overwrite)
    return written


# ====================================================================== files in, files out


def check_paths(
    input_path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    overwrite: bool = False,
    maps_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Where to write (:func:`output_path_for`), once the paths are checked: the input exists
    and is a format medsr reads, the output (and ``maps_dir``) does not exist unless
    ``overwrite``, and the output is not the input (inputs are never modified). The JSON sidecar
    of a NIfTI/PNG/TIFF/npy output counts as an output, and one that describes another file (or a
    JSON file medsr did not write) is refused even with ``overwrite``
    (:func:`medsr.io.sidecar.check_sidecar`). Needs no torch."""
    from medsr.io import sniff_format
    from medsr.io._atomic import check_not_input, check_output
    from medsr.io.sidecar import check_sidecar

    sniff_format(input_path)
    target = output_path_for(input_path, output)
    check_not_input(input_path, target)  # first: the reason that holds whatever the options
    check_output(target, overwrite, output_kind(target))
    check_sidecar(target, overwrite)
    if maps_dir is not None:
        check_not_input(input_path, maps_dir)
        check_output(maps_dir, overwrite, "folder")
    return target


def writer_options(target: str | os.PathLike[str], output_dtype: str | None) -> dict[str, Any]:
    """The writer's options for ``output_dtype`` (``--output-dtype``): ``input`` (default) keeps an
    integer source's storage, ``float32`` writes float32 (:func:`medsr.io.nifti.write_nifti`).
    It applies to NIfTI outputs; ``.npy`` is float32 anyway; DICOM, PNG and TIFF store integers,
    so ``float32`` there is an error. Needs no torch."""
    from medsr.errors import InvalidParameterError
    from medsr.io import format_for_output
    from medsr.io.nifti import check_output_dtype

    if output_dtype is None:
        return {}
    want = check_output_dtype(output_dtype, "--output-dtype")
    fmt = format_for_output(target)
    if fmt == "nifti":
        return {"dtype": want}
    if want == "float32" and fmt != "npy":
        raise InvalidParameterError(
            f"--output-dtype float32 applies to NIfTI (and .npy) outputs; a {fmt.upper()} output "
            f"stores integers (with a rescale where the values need one)"
        )
    return {}


def output_path_for(input_path: str | os.PathLike[str], output: str | os.PathLike[str]) -> Path:
    """Where to write: ``output`` itself when its suffix names a format; otherwise a folder.

    For a DICOM input the folder *is* the derived series; for other inputs the result is written
    inside the folder under the input's name, in the input's format.
    """
    from medsr.errors import UnsupportedFormatError
    from medsr.io import OUTPUT_SUFFIX, format_for_output, sniff_format

    out = Path(output)
    try:
        fmt = format_for_output(out)
    except UnsupportedFormatError:
        fmt = None
    if fmt is not None and fmt != "dicom":
        return out
    if out.suffix.lower() in (".dcm", ".dicom"):
        return out
    in_fmt = sniff_format(input_path)
    if in_fmt == "dicom":
        return out
    name = Path(input_path).name
    return (
        out / name
        if format_for_output(name) == in_fmt
        else out / (Path(name).stem + OUTPUT_SUFFIX[in_fmt])
    )


def check_physics_unused(degradation: str | None, *, through_plane: bool) -> None:
    """Stated in-plane physics is an error where nothing would use it (through-plane upscaling,
    zero-shot) rather than silently ignored; ``auto``/``none`` pass."""
    if degradation is None or str(degradation).strip().lower() in ("auto", "none", ""):
        return
    raise InvalidParameterError(
        "--degradation states the in-plane physics of --method model; "
        + (
            "through-plane upscaling models the slice profile instead (--profile, --slice-thickness)"
            if through_plane
            else "--method zero-shot learns from the image itself and does not use it"
        )
    )


def check_options(
    *,
    scale: int = 2,
    model: str | os.PathLike[str] | LoadedModel | None = None,
    method: str = "model",
    through_plane: bool = False,
    target_spacing: float | None = None,
    consistency: str | bool = CONSISTENCY_DEFAULT,
    degradation: str | None = None,
    modality: str | None = None,
    precision: str = "fp32",
    init: str | None = None,
    budget_s: float | None = None,
    epochs: int | None = None,
    adapt_steps: int = 0,
    ensemble: bool = False,
    device: str | None = None,
) -> LoadedModel | None:
    """Every option of an upscale, checked once before any input is read (the one validation
    every front end shares); returns the resolved in-plane model (``None`` for zero-shot).

    ``device`` (where the front end runs the model, when it knows): ``precision="fp16"`` is
    refused at once on a device without CUDA, not after the input was read."""
    from medsr.inference.planes import check_precision

    consistency_setting(consistency)
    if method not in ("model", "zero-shot"):
        raise InvalidParameterError(f"method must be 'model' or 'zero-shot', got {method!r}")
    scale = check_scale(scale)
    if modality is not None:
        check_modality(modality)
    if degradation is not None and str(degradation).strip().lower() not in ("auto", "none"):
        resolve_measurement(degradation, scale)  # a clear error for an unknown kind
    if target_spacing is not None and not through_plane:
        raise InvalidParameterError(
            "a target spacing applies to through-plane upscaling only (--through-plane)"
        )
    zero_shot = method == "zero-shot" or through_plane
    if zero_shot:
        check_physics_unused(degradation, through_plane=through_plane)
    precision = check_precision(precision)
    if precision not in ("fp32", "auto") and zero_shot:  # auto: fp32 there
        raise InvalidParameterError("precision applies to trained models (--method model) only")
    if precision == "fp16" and device is not None:
        from medsr.inference.device import resolve_device
        from medsr.inference.precision import check_precision_on

        check_precision_on(precision, resolve_device(device).type)
    if ensemble and zero_shot:
        raise InvalidParameterError(
            "ensemble (the mean over flips/rotations) applies to trained in-plane models (--method model) only"
        )
    if init is not None and not zero_shot:
        raise InvalidParameterError(
            "init (weights to fine-tune) applies to --method zero-shot or --through-plane only"
        )
    if through_plane:
        from medsr.errors import positive_number
        from medsr.selfsup._fit import check_steps

        check_steps(adapt_steps)
        if target_spacing is not None:
            positive_number(target_spacing, "the target spacing", "mm")
        prior = through_plane_prior(model, method, init)
        if prior not in (None, "auto"):
            resolve_model(prior, kinds=("through-plane",))  # a clear error for a wrong kind
        return None
    if zero_shot:
        from medsr.selfsup._fit import check_budget

        check_budget(budget_s, epochs)
        if model is not None and str(model).endswith(".safetensors"):
            raise InvalidParameterError(
                "zero-shot methods learn their own weights; pass weights to fine-tune with init (--init)"
            )
        from medsr.models.resolver import shipped_weights

        if isinstance(model, str) and model in shipped_weights():
            raise InvalidParameterError(
                f"--method zero-shot trains an architecture on the image itself (--model names one, "
                f"e.g. residual5); {model!r} is shipped weights: fine-tune them with --init default "
                "or run them with --method model"
            )
        if isinstance(model, str) and model.strip().lower() != "default":
            from medsr.models.registry import get_model_class

            if not getattr(get_model_class(model), "learned", True):  # unknown: a clear error
                raise InvalidParameterError(
                    f"--method zero-shot trains a network on the image itself; {model!r} is a "
                    "classical interpolator with nothing to learn: name a network (--model "
                    "residual5, the default, or vdsr) or run it with --method model"
                )
        return None
    return resolve_model(model, scale=scale, kinds=("in-plane", "classical"), inference_only=True)


#: where a through-plane output's slice profile came from (``source`` of its derivation's
#: ``slice_profile``: :func:`medsr.selfsup.through_plane._slice_profile`), in every record's words
TP_PROFILE_SOURCE = {
    "given": "stated",
    "header": "from the header",
    "estimated": "estimated from the volume",
    "spacing": "assumed: thickness = slice spacing",
}


def _ms(seconds: Any) -> float | None:
    """``seconds`` in milliseconds as the summaries' ``timing_ms`` keep them (``None`` stays)."""
    return None if seconds is None else round(float(seconds) * 1000, 1)


def through_plane_summary(
    image: MedImage, result: MedImage, no_data: NoData = COMPUTE
) -> dict[str, Any]:
    """The JSON summary of a through-plane output ``result`` of ``image`` (``summary.json``
    beside its maps). Its uncertainty map's statistics are over the voxels that hold data,
    relative to the input's range there (:func:`_data_range`), as every summary of medsr's
    maps: the output keeps no data exact (:func:`medsr.slice_grid.no_data_kept`), so the map's
    0 there is nothing measured, and a CT's fill would widen the range. ``no_data``: the
    input's :func:`~medsr.io.padding.no_data_mask` where the caller has it."""
    from medsr.slice_grid import no_data_kept

    d = result.meta.get("derivation", {})
    prof = d.get("slice_profile") or {}
    source = str(prof.get("source"))
    training = d.get("training")
    timing = {"total": _ms(d.get("seconds"))}
    if training:
        timing["adaptation"] = _ms(training.get("seconds"))
        training = {k: v for k, v in training.items() if k != "seconds"}
    summary: dict[str, Any] = {
        "model": d.get("model"),
        "method": d.get("method"),
        "model_checksum": d.get("model_checksum"),
        "scale_z": d.get("scale"),
        "degradation": {
            "kind": "thick-slice",
            "describe": f"thick-slice, {prof.get('profile')} profile {prof.get('slice_thickness_mm')} mm "
            f"({TP_PROFILE_SOURCE.get(source, source)})",
            **prof,
        },
        # the slice profile is the physics: named as in-plane's (its kind) with where it came from
        "physics": f"thick-slice ({TP_PROFILE_SOURCE.get(source, source)})",
        "adaptation": training,
        "consistency": d.get("consistency") or {"setting": "off", "applied": False},
        "uncertainty": {"method": "half the |sagittal - coronal| difference of the two estimates"},
        # run times, as in-plane's: in summary.json, never in the provenance (provenance())
        "timing_ms": {k: v for k, v in timing.items() if v is not None},
    }
    u = (result.meta.get("maps") or {}).get("uncertainty")
    if u is not None:
        pad = no_data_of(image, no_data)
        n_out = result.spatial_shape[0]
        if image.channels == "time":  # each time point's map, over its own data and range
            kept = None if pad is None else no_data_kept(np.asarray(pad), n_out, 1)
        else:
            kept = None if pad is None else no_data_kept(np.asarray(pad.all(axis=0)), n_out, 0)
        summary["uncertainty"]["map"] = _map_summary(
            u, kept, _ranges(image, pad), UNCERTAINTY_THRESHOLD, result.units,
            over="the {n} voxels that hold data (the map is 0 on the rest: kept exact)",
        )  # fmt: skip
    return summary


def through_plane_error(
    image: MedImage,
    result: MedImage,
    profile: dict[str, Any] | None = None,
    no_data: NoData = COMPUTE,
) -> np.ndarray:
    """Signed ``D(SR) − input`` of a through-plane output, on the input's grid and in its units
    (shaped like ``image.array``): the output as written, made thick again with the slice
    profile (``profile``, else the one its derivation records: ``slice_thickness_mm`` and
    ``profile``; :func:`medsr.degradations.thick_slice.thick_slice_matrix`, any ratio of slice
    counts), minus the measured slices. No data (:func:`medsr.io.padding.no_data_mask`: DICOM
    padding, a CT's fill outside the scan circle, a NIfTI's NaN) is no signal: the output's, where
    it kept the input's (:func:`medsr.slice_grid.no_data_kept`), is read as the darkest measured
    value — what the network saw there — and the error is 0 where nothing was measured, as
    in-plane (:func:`medsr.safeguards.consistency.consistency_error`). ``no_data``: the
    input's :func:`~medsr.io.padding.no_data_mask` where the caller has it."""
    import torch

    from medsr.degradations.thick_slice import thick_slice_matrix
    from medsr.slice_grid import no_data_kept, slice_spacing

    prof = profile or (result.meta.get("derivation") or {}).get("slice_profile") or {}
    if "slice_thickness_mm" not in prof:
        raise InvalidParameterError("the output records no slice profile to measure it with")
    z, n_out = image.spatial_shape[0], result.spatial_shape[0]
    w = thick_slice_matrix(
        z, n_out, profile=str(prof.get("profile", "gaussian")),
        thickness=float(prof["slice_thickness_mm"]) / slice_spacing(image),
    )  # fmt: skip
    out = result.channel_first()
    c, _, h, wd = out.shape
    mask, low = no_data_fill(image, no_data)  # shaped like image.array
    held = None if mask is None else (mask if image.channels else mask[None])
    if held is not None and out.shape[-2:] == held.shape[-2:]:
        out = np.where(no_data_kept(held, n_out, 1), np.float32(low), out)
    flat = torch.from_numpy(np.ascontiguousarray(out, np.float32).reshape(c, n_out, h * wd))
    thick = (torch.from_numpy(w.astype(np.float32)) @ flat).numpy().reshape(c, z, h, wd)
    err = thick - image.channel_first().astype(np.float32, copy=False)
    if held is not None:  # no error where nothing was measured
        err[held] = 0.0
    return err if image.channels else err[0]


def _channel_word(image: MedImage) -> str:
    """What a map's one value per pixel is the mean over: ``time frames`` or ``colour channels``."""
    return "time frames" if image.channels == "time" else "colour channels"


def _through_plane_checked(
    image: MedImage, result: MedImage, *, maps: bool, no_data: NoData = COMPUTE
) -> MedImage:
    """The consistency check of a through-plane output (every front end): the error statistics
    of :func:`through_plane_error` in its derivation's ``consistency`` (``error``; beside
    cubic interpolation's when above the threshold), a :class:`ConsistencyWarning` when it
    disagrees with the input as in-plane, and with ``maps`` the ``|error|`` map (the mean over
    colour channels), each measured slice's value repeated over the output slices it holds.
    An image over time: each time point judged on its own, relative to its own range
    (``time_points``, each what that time point run on its own records; at the top the one
    that disagrees most: ``time_point``, ``exceeded_time_points``), its map ``(T, Z, Y, X)``.
    The statistics are over the input voxels that hold data (``over``; the error is 0 where
    nothing was measured: no evidence of agreement) relative to the measured range there
    (:func:`_data_range`), as in-plane's (:func:`judge_consistency`): a CT's fill would
    dilute the mean and percentiles, and its −3024 HU (−1024 HU read as air) widen the range.
    ``no_data``: the input's :func:`~medsr.io.padding.no_data_mask` where the caller has it."""
    from medsr.selfsup.through_plane import interpolate_z
    from medsr.slice_grid import cell_positions

    d = dict(result.meta["derivation"])
    prof = d.get("slice_profile") or {}
    cons = dict(d.get("consistency") or {"setting": "off", "applied": False})
    pad = no_data_of(image, no_data)
    err = through_plane_error(image, result, prof, pad)
    held = None if pad is None else ~np.asarray(pad).reshape(err.shape)  # shaped like err
    n_out = result.spatial_shape[0]
    cubic_errors: list[np.ndarray] = []

    def cubic_error() -> np.ndarray:  # |thick-slice(cubic) − input|, built once when needed
        if not cubic_errors:
            with warnings.catch_warnings():  # the volume's warnings were given once already
                warnings.simplefilter("ignore", MedSRWarning)
                cubic = interpolate_z(image, n_slices=n_out, mode="cubic", no_data=pad)
            cubic_errors.append(np.abs(through_plane_error(image, cubic, prof, pad)))
        return cubic_errors[0]

    def judged(
        record: dict[str, Any], e: np.ndarray, h: np.ndarray | None, rng: float, ref: Any
    ) -> None:  # one volume's, over its voxels that hold data (``h``; all when None)
        if h is not None:
            record["over"] = f"the {int(h.sum())} input voxels that hold data"
        record["error"] = _error_stats(e, rng, CONSISTENCY_THRESHOLD, image.units, h)
        p99, base = float(record["error"]["p99_rel"]), None
        if p99 > CONSISTENCY_THRESHOLD:  # only then is cubic interpolation's error needed
            r = ref()
            base = float(np.percentile(r if h is None else r[h], 99)) / rng
            record["cubic_p99_rel"] = round(base, 6)
        record["exceeded"] = consistency_exceeded(
            p99, base, CONSISTENCY_THRESHOLD, CONSISTENCY_RELATIVE
        )

    over_time = image.channels == "time"
    if not over_time:
        judged(cons, err, held, _data_range(image, pad), cubic_error)
    else:  # each time point on its own: its error over its own data, relative to its own range
        records = []
        for t in range(image.array.shape[0]):
            record: dict[str, Any] = {}
            judged(
                record, err[t], None if held is None else held[t],
                _data_range(image, pad, time_point=t), lambda t=t: cubic_error()[t],
            )  # fmt: skip
            records.append(record)
        cons.update(_consistency_over_time(records))
    cons["threshold_rel"] = CONSISTENCY_THRESHOLD
    source = str(prof.get("source"))
    said = TP_PROFILE_SOURCE.get(source, source)
    cons["measured_with"] = (
        f"{prof.get('profile')} slice profile, {prof.get('slice_thickness_mm')} mm ({said})"
    )
    if cons.get("setting") == "auto" and not cons.get("applied"):
        # why auto did not project, in the provenance's words (consistency_label)
        cons["reason"] = f"slice profile {said}, not stated (--slice-thickness states it)"
    if cons["exceeded"]:
        p99, base = float(cons["error"]["p99_rel"]), cons.get("cubic_p99_rel")
        extra = f", {p99 / base:.1f}x cubic interpolation's" if base else ""
        which = _exceeded_at(cons, image.array.shape[0]) if over_time else ""
        warnings.warn(
            f"the upscaled volume disagrees with the measured slices{which}: 99th percentile of "
            f"|thick-slice(SR) - input| is {cons['error']['p99']:.4g} {image.units} "
            f"({p99:.1%} of the input range{extra}; threshold {CONSISTENCY_THRESHOLD:.0%}) "
            f"for the {cons['measured_with']}",
            ConsistencyWarning,
            stacklevel=3,
        )
    meta = {**result.meta, "derivation": {**d, "consistency": cons}}
    if maps:
        cmap = np.abs(err)  # an image over time's: (T, Z, Y, X), each time point's own
        if image.channels == "RGB":
            cmap = mean_over_held(cmap, pad)
            cons["map"] = (
                f"the mean of |error| over the {_channel_word(image)} that hold data at each "
                "pixel (the statistics: over every one)"
            )
        # the measured slice whose cell holds each output slice's centre (no interpolation)
        src = np.clip(np.floor(cell_positions(image.spatial_shape[0], n_out) + 0.5), 0, None)
        src = np.minimum(src.astype(np.int64), image.spatial_shape[0] - 1)
        meta["maps"] = {
            **(result.meta.get("maps") or {}),
            "consistency": np.ascontiguousarray(cmap[..., src, :, :]),
        }
    return result.replace(meta=meta)


#: a through-plane output's error bound is calibrated on the volume one scale down along z
#: (:func:`calibrate_through_plane_bound`), which needs at least this many slices there
TP_BOUND_MIN_SLICES = 3
#: the candidate spreads of a through-plane error bound (:func:`through_plane_spread`)
TP_SPREADS = ("orientations", "linear", "slices")
#: the spread the bound uses (chosen in ``benchmarks/trust_maps.py --sets through-plane``)
TP_SPREAD = "linear"
_TP_SPREAD_TEXT = {
    "orientations": "half the |sagittal - coronal| difference of the two estimates",
    "linear": "|output - linear interpolation along z|",
    "slices": "|difference of the two measured slices around each output slice|",
}


def through_plane_spread(
    image: MedImage, result: MedImage, kind: str = TP_SPREAD, no_data: NoData = COMPUTE
) -> np.ndarray:
    """The per-voxel spread ``(Z_out, Y, X)`` float32 (input units) of a through-plane output
    ``result`` of ``image`` that its error bound scales (:func:`calibrate_through_plane_bound`):
    ``orientations`` — the z-uncertainty map (half the sagittal–coronal disagreement; needs
    ``maps``); ``linear`` — ``|result − linear interpolation along z|``, how far the output
    departs from the plainest estimate; ``slices`` — ``|x[k+1] − x[k]|`` of the two measured
    slices around each output slice, how much z changes there. A colour volume's: the mean
    over its channels; an image over time's ``(T, Z_out, Y, X)``, each time point's. No data
    is read as the darkest measured value (``no_data``: the input's
    :func:`~medsr.io.padding.no_data_mask` where the caller has it)."""
    from medsr.selfsup.through_plane import interpolate_z
    from medsr.slice_grid import neighbour_step

    n_out = result.spatial_shape[0]
    over_time = image.channels == "time"
    if kind == "orientations":
        u = (result.meta.get("maps") or {}).get("uncertainty")
        if u is None:
            raise InvalidParameterError("the orientations spread needs the output's z-uncertainty")
        return np.asarray(u, np.float32)
    if kind == "linear":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MedSRWarning)
            lin = interpolate_z(
                image, n_slices=n_out, mode="linear", no_data=no_data
            ).channel_first()
        d = np.abs(np.nan_to_num(result.channel_first() - lin))
        return (d if over_time else d.mean(axis=0)).astype(np.float32)
    if kind == "slices":
        cf = fill_no_data(image, no_data)[0].channel_first()
        step = neighbour_step(cf, n_out, axis=1)
        return step if over_time else step.mean(axis=0)  # over the channels
    raise InvalidParameterError(f"unknown spread {kind!r} (one of {', '.join(TP_SPREADS)})")


def calibrate_through_plane_bound(
    image: MedImage,
    result: MedImage,
    *,
    prior: Any,
    device: str = "auto",
    spread: str = TP_SPREAD,
    no_data: NoData = COMPUTE,
    **options: Any,
) -> dict[str, Any]:
    """The factor ``k`` of a through-plane output's error bound, measured where the truth is
    known: the input made thick once more along z — its slice profile and width in slice
    spacings, ``z / ratio`` slices (``ratio``: the output's slices per input slice) — upscaled
    back to the input's slices by the same through-plane path with the same prior, adaptation
    steps and options (the projection on when it was applied), and compared with the input;
    ``k`` is the :data:`~medsr.safeguards.error_bound.COVERAGE` quantile of ``|error| /
    √(spread² + noise²)`` there (``spread``: :func:`through_plane_spread`; ``noise``: the
    in-plane noise of the thick slices, each output slice that of its nearest one), ``ceil(ratio)``
    slices at each end and no data left out. An image over time: each time point's ``k`` from
    its own error, spread and noise (``time_points``, as :func:`calibrate_error_bound`'s; the
    adaptation, when asked for, is one over all time points as the output's).
    ``{"calibrated": False, "reason": ...}`` when the volume is too thin to be made thick once more (fewer than :data:`TP_BOUND_MIN_SLICES`
    slices one scale down). ``no_data``: the input's :func:`~medsr.io.padding.no_data_mask`
    where the caller has it (the thicker volume's is worked out once, for its upscale and its
    spread)."""
    import math

    from medsr.degradations.thick_slice import thicken
    from medsr.safeguards.error_bound import calibration_record, image_noise
    from medsr.selfsup import through_plane_upscale
    from medsr.slice_grid import nearest_slices, slice_spacing

    d = result.meta.get("derivation") or {}
    prof = d.get("slice_profile") or {}
    z, n_out = image.spatial_shape[0], result.spatial_shape[0]
    ratio = n_out / z
    z_low = round(z / ratio)
    if z_low < TP_BOUND_MIN_SLICES:
        return {
            "calibrated": False,
            "reason": f"volume too thin for a calibration one scale down along z ({z} slices "
            f"made {ratio:.4g}x thicker leave {z_low}; at least {TP_BOUND_MIN_SLICES} needed)",
        }
    profile, thickness = str(prof["profile"]), float(prof["slice_thickness_mm"])
    sz = slice_spacing(image)
    filled, mask, _ = fill_no_data(image, no_data)
    cf = filled.channel_first().astype(np.float32, copy=False)  # (C, Z, Y, X)
    pad = None if mask is None else (mask if image.channels else mask[None])
    # a thick slice holds no data where any thin slice under its profile holds none (valid_low)
    low, valid_low = thicken(
        cf, z_low, profile=profile, thickness=thickness / sz, axis=1, no_data=pad
    )
    lower = filled.replace(meta={}).resampled(low if image.channels else low[0])
    lower_pad = no_data_mask(lower)
    applied = bool((d.get("consistency") or {}).get("applied"))
    # the grid, profile and projection are set here; the rest as the output's run had them
    own = ("on_progress", "progress", "maps", "target_spacing", "slice_thickness", "profile")
    opts = {k: v for k, v in options.items() if k not in own}
    with warnings.catch_warnings():  # the volume's warnings were given once already
        warnings.simplefilter("ignore", MedSRWarning)
        sr = through_plane_upscale(
            lower, target_spacing=sz, slice_thickness=thickness * z / z_low, profile=profile,
            prior=prior, device=device, consistency="on" if applied else "off",
            maps=spread == "orientations", progress=False, no_data=lower_pad, **opts,
        )  # fmt: skip
    if sr.spatial_shape[0] != z:  # cannot happen with the grid rule; never compare misaligned
        return {
            "calibrated": False,
            "reason": "the calibration did not return to the input's slices",
        }
    error = np.abs(sr.channel_first() - cf)  # (C, Z, Y, X)
    std = through_plane_spread(lower, sr, spread, lower_pad)
    e = math.ceil(ratio)  # the profile's mirrored ends, not the model
    nearest = nearest_slices(z_low, z)

    def calibrated(
        err: np.ndarray, spread_: np.ndarray, thick: np.ndarray, valid: Any, held: Any
    ) -> dict[str, Any]:  # one volume's k: (C, Z, Y, X) error, thick slices and no data
        keep = np.zeros(err.shape[1:], dtype=bool)
        keep[e : z - e] = True
        if held is not None:
            keep &= ~held.any(axis=0)
        return calibration_record(
            err.mean(axis=0), spread_, image_noise(thick, valid)[nearest], keep,
            reason="no voxel to calibrate on one scale down along z",
            spread=_TP_SPREAD_TEXT[spread],
            calibration={
                "degradation": f"thick-slice, {profile} profile {thickness * z / z_low:.4g} mm",
                "slices": f"{z_low} made {z}",
                "voxels": int(keep.sum()),
            },
        )  # fmt: skip

    thick = lower.channel_first()
    if image.channels != "time":
        return calibrated(error, std, thick, valid_low, pad)
    # an image over time: each time point's k, from its own error, spread and noise
    records = [
        calibrated(
            error[t : t + 1],
            std[t],
            thick[t : t + 1],
            None if valid_low is None else valid_low[t : t + 1],
            None if pad is None else pad[t : t + 1],
        )
        for t in range(cf.shape[0])
    ]
    return {"calibrated": any(r["calibrated"] for r in records), "time_points": records}


def _through_plane_bound(
    image: MedImage,
    result: MedImage,
    *,
    prior: Any,
    device: str,
    spread: str = TP_SPREAD,
    no_data: NoData = COMPUTE,
    **options: Any,
) -> tuple[np.ndarray | None, dict[str, Any]]:
    """The ``error_bound`` map of a through-plane output and its summary
    (:func:`calibrate_through_plane_bound`); ``(None, why)`` when it cannot be calibrated. The
    voxels the output kept exact (no data: :func:`medsr.slice_grid.no_data_kept`) get 0. An
    image over time: ``(T, Z, Y, X)``, each time point's (:func:`_bounds_over_time`). The
    statistics are relative to the measured range (:func:`_data_range`), as every summary of
    medsr's maps. ``no_data``: the input's :func:`~medsr.io.padding.no_data_mask` where the
    caller has it."""
    from medsr.safeguards.error_bound import bound_summary, error_bound, image_noise
    from medsr.slice_grid import nearest_slices, no_data_kept

    pad = no_data_of(image, no_data)
    info = calibrate_through_plane_bound(
        image, result, prior=prior, device=device, spread=spread, no_data=pad, **options
    )
    if not info.get("calibrated"):
        return None, info
    z, n_out = image.spatial_shape[0], result.spatial_shape[0]
    nearest = nearest_slices(z, n_out)
    spreads = through_plane_spread(image, result, spread, pad)
    if image.channels == "time":  # each time point's bound: its own k, spread, noise and range
        noises = _time_point_noises(image, pad)
        return _bounds_over_time(
            info, spreads, noises, [n[nearest] for n in noises],
            None if pad is None else no_data_kept(np.asarray(pad), n_out, 1),
            _time_point_ranges(image, pad), UNCERTAINTY_THRESHOLD, image.units,
        )  # fmt: skip
    noise = image_noise(image.channel_first(), None if pad is None else ~pad)
    bound = error_bound(spreads, noise[nearest], info["factor"])
    none = None if pad is None else no_data_kept(np.asarray(pad.all(axis=0)), n_out, 0)
    return bound, bound_summary(
        info, bound, noise, none, _data_range(image, pad), UNCERTAINTY_THRESHOLD, image.units
    )


def zero_shot_checked(
    image: MedImage,
    result: MedImage,
    scale: int,
    *,
    consistency: str | bool = CONSISTENCY_DEFAULT,
    maps: bool = False,
    threshold: float = CONSISTENCY_THRESHOLD,
    relative: float | None = CONSISTENCY_RELATIVE,
    warn: bool = False,
    iterations: int = 30,
    tol: float = 1e-3,
) -> tuple[MedImage, dict[str, Any]]:
    """The safeguards of an in-plane zero-shot result ``result`` of ``image`` (every front
    end): its consistency with the input under the modality's default degradation
    (:func:`assumed_degradation`: zero-shot states no physics) — measured, and with
    ``consistency="on"`` projected (``"auto"`` projects where the physics is known, so here it
    only measures, as for ``--method model`` without ``--degradation``) —, the consistency map
    (``meta["maps"]``) with ``maps``, a warning where the error exceeds the threshold, and the
    provenance record, whose summary carries the training the network did.

    Returns ``(result, summary)`` like :func:`upscale_with_safeguards`.
    """
    setting = consistency_setting(consistency)
    scale = check_scale(scale)
    meas, source = assumed_degradation(None, {}, scale, image.modality)
    project = setting == "on"
    pad = no_data_mask(image)
    rng = _ranges(image, pad)  # an image over time: each time point's own
    t0 = time.perf_counter()
    # the summary from a bounded sample of planes (as a model's check); a map needs them all
    nz, h, w = image.array.shape[-3:]
    zs = (
        slice(None)
        if maps
        else sample_planes(nz, 1, max(1, CONSISTENCY_SAMPLE_PIXELS // max(h * w, 1)))
    )
    measured = _planes_of(image, zs)
    err = consistency_error(_planes_of(result, zs), measured, meas, scale)
    cons: dict[str, Any] = {"setting": setting, "applied": project, "threshold_rel": threshold}
    if project:
        result = enforce_consistency(result, image, meas, scale, iterations=iterations, tol=tol)
        proj = result.meta.get("consistency") or {}
        cons.update(method=proj.get("method"), iterations=proj.get("iterations"))
        before: np.ndarray | None = err
        err = consistency_error(_planes_of(result, zs), measured, meas, scale)
    else:
        before = None
    if not isinstance(zs, slice):
        cons["planes"] = f"{len(zs)} of {nz}"

    def bicubic() -> MedImage:
        from medsr.inference.planes import PlaneUpscaler

        return PlaneUpscaler("bicubic", scale, device="cpu").upscale(measured)

    disagrees = judge_consistency(
        cons, measured, err, rng, threshold=threshold, relative=relative, meas=meas,
        scale=scale, reference=bicubic, err_before=before,
    )  # fmt: skip
    caught: list[str] = []
    unstated = spacing_unstated(image, scale)
    if unstated:
        caught.append(unstated)
        if warn:
            warnings.warn(unstated, MedSRWarning, stacklevel=2)
    derivation = result.meta.get("derivation") or {}
    training = derivation.get("training") or {}
    # the training's run time: in summary.json's timing_ms only, never in the derivation (the
    # sidecar's, the DICOM text's) nor the provenance: the same input and settings give the
    # same record, as a model's and the through-plane path's (provenance())
    t_train = _ms(training.get("seconds"))
    if "seconds" in training:
        training = {k: v for k, v in training.items() if k != "seconds"}
        derivation = {**derivation, "training": training}
        result = result.replace(meta={**result.meta, "derivation": derivation})
    if training.get("steps") == 0:
        start = (
            f"the weights it was to fine-tune ({training['init']}) as they are"
            if training.get("init")
            else "cubic interpolation"
        )
        caught.append(
            "the training budget ran out before the network's first training step: the output "
            f"is its starting point, {start}, not learned from this image; give it more time "
            "(--budget)"
        )
        if warn:
            warnings.warn(caught[-1], MedSRWarning, stacklevel=2)
    if disagrees:
        caught.append(disagrees)
        if warn:
            warnings.warn(caught[-1], ConsistencyWarning, stacklevel=2)
    summary: dict[str, Any] = {
        "model": derivation.get("model"),
        "method": derivation.get("method"),
        "scale": scale,
        "degradation": {**meas.as_dict(), "describe": meas.describe(), "source": source},
        "physics": "unknown",
        "training": derivation.get("training"),
        "consistency": cons,
        "uncertainty": {"method": "none", "transforms": 1},
        "warnings": caught,
        "timing_ms": {"consistency": round((time.perf_counter() - t0) * 1000, 1)},
    }
    if t_train is not None:
        summary["timing_ms"]["training"] = t_train
    meta = {k: v for k, v in result.meta.items() if k != "consistency"}
    meta["safeguards"] = summary
    if maps:
        cmap = _consistency_map(err, image, scale, pad)
        meta["maps"] = {**(meta.get("maps") or {}), "consistency": cmap}
    result = result.replace(meta=meta)
    record = provenance(
        model=derivation.get("model") or "zero-shot",
        card=None,
        scale=scale,
        degradation=meas.describe(),
        consistency=consistency_label(cons),
        summary=summary,
    )
    return attach_provenance(result, record), summary


def through_plane_prior(model: Any, method: str, init: str | None) -> Any:
    """The through-plane prior ``upscale_file``'s options ask for: ``None`` (no prior: the network
    starts as cubic interpolation) for ``method="zero-shot"`` or ``model`` ``none``/``scratch``;
    ``init`` or ``model`` when they name weights; ``"auto"`` (the shipped prior) otherwise."""
    if method == "zero-shot":
        return None
    if init is not None:
        return init
    if model is None or str(model).lower() in ("auto", "default"):
        return "auto"
    return None if str(model).lower() in ("none", "scratch") else model


def upscale_through_plane(
    image: MedImage,
    *,
    prior: Any = "auto",
    target_spacing: float | None = None,
    consistency: str = CONSISTENCY_DEFAULT,
    maps: bool = False,
    device: str = "auto",
    error_bound: bool = True,
    **options: Any,
) -> tuple[MedImage, dict[str, Any]]:
    """The pipeline's through-plane step (every front end): the shipped prior, adapted to the
    volume when ``adapt_steps`` is given (:func:`medsr.selfsup.through_plane_upscale`), then
    provenance — prior checksum, slice profile and where it came from, adaptation steps,
    consistency — and, with ``maps``, the z-uncertainty map in ``meta["maps"]`` and (unless
    ``error_bound=False``) the ``error_bound`` map: per voxel, the value that about 90 % of
    the errors stay below, calibrated on the volume itself one scale down along z
    (:func:`calibrate_through_plane_bound`; it runs the same path once more on ``1/ratio`` of
    the slices, the adaptation included), its record in the summary's ``error_bound``. An
    output past the pixel ceiling (:func:`medsr.io.limits.check_output_size`) is refused first.

    Returns ``(result, summary)`` like :func:`upscale_with_safeguards`.
    """
    from medsr.selfsup import through_plane_upscale
    from medsr.slice_grid import output_slices, positive_mm

    pad: NoData = COMPUTE  # what is not a volume: refused below as before
    if isinstance(image, MedImage) and image.array.size:
        # every front end's door (web service, batch, PACS bridge, API): an output past the
        # ceiling is refused before it is computed, as upscale_with_safeguards and medsr
        # upscale do (a target the through-plane rule refuses is refused there, in its order)
        _, ny, nx = image.spatial_shape
        grid = min(image.spacing[1:]) if target_spacing is None else positive_mm(target_spacing)
        if grid is not None:
            check_output_size(image, (output_slices(image, grid), ny, nx))
        # the input's no data, worked out once for every step below (each worked it out again:
        # 2 passes over the volume, 7 with maps, and 2 for the calibration's thicker volume)
        pad = no_data_mask(image)
    result = through_plane_upscale(
        image, target_spacing=target_spacing, prior=prior, device=device,
        consistency=consistency_setting(consistency), maps=maps, no_data=pad, **options,
    )  # fmt: skip
    result = _through_plane_checked(image, result, maps=maps, no_data=pad)
    summary = through_plane_summary(image, result, pad)  # the run times: in its timing_ms
    # the derivation (the sidecar's, the DICOM text's) without them: the same input, model and
    # settings give the same record, as in-plane (provenance())
    d = {k: v for k, v in result.meta["derivation"].items() if k != "seconds"}
    if d.get("training"):
        d["training"] = {k: v for k, v in d["training"].items() if k != "seconds"}
    result = result.replace(meta={**result.meta, "derivation": d})
    if maps and error_bound:
        t0 = time.perf_counter()
        bound, summary["error_bound"] = _through_plane_bound(
            image, result, prior=prior, device=device, no_data=pad, **options
        )
        summary["timing_ms"]["error_bound"] = round((time.perf_counter() - t0) * 1000, 1)
        if bound is not None:
            result = result.replace(
                meta={**result.meta, "maps": {**result.meta["maps"], "error_bound": bound}}
            )
    record = provenance(
        model=d.get("model"), card={"name": d.get("model")}, scale=max(1, round(float(d.get("scale", 1)))),
        degradation=summary["degradation"]["describe"],
        consistency=consistency_label(summary["consistency"]), summary=summary,
    )  # fmt: skip
    record["model_checksum"] = d.get("model_checksum")
    # the factor along z as it is (11 slices from 7: 1.5714), not rounded to a whole one: a
    # target spacing rarely gives one (the whole number where it is: --scale 2 → 2)
    factor = float(d.get("scale", 1))
    record["scale"] = int(factor) if factor.is_integer() else factor
    record["scale_z"] = d.get("scale")
    return attach_provenance(result, record), summary


def _through_plane_file(
    image: MedImage,
    target: Path,
    *,
    model: Any,
    method: str,
    init: str | None,
    target_spacing: float | None,
    consistency: str,
    device: str,
    maps_dir: str | os.PathLike[str] | None,
    overwrite: bool,
    write_options: dict[str, Any] | None = None,
    grid_out: dict[str, Any] | None = None,
    **options: Any,
) -> Path:
    """``upscale_file`` for ``through_plane=True``: :func:`upscale_through_plane`, then the
    same writers as every output (``write_options``: :func:`writer_options`; ``grid_out``:
    :func:`output_grid` of what was written)."""
    options.pop("budget_s", None)
    result, summary = upscale_through_plane(
        image, prior=through_plane_prior(model, method, init), target_spacing=target_spacing, consistency=consistency,
        maps=maps_dir is not None, device=device, **options,
    )  # fmt: skip
    written = save_safeguarded(
        result,
        target,
        summary=summary,
        maps_dir=maps_dir,
        overwrite=overwrite,
        **(write_options or {}),
    )
    if grid_out is not None:
        grid_out.update(output_grid(result))
    return written


def output_grid(image: MedImage) -> dict[str, Any]:
    """The grid of an output as :func:`upscale_file` reports it in ``grid_out``: ``shape_zyx``,
    ``spacing_mm_zyx`` and ``slice_spacing_mm``, the distance between the slices' planes
    (:func:`medsr.slice_grid.slice_spacing`: what SpacingBetweenSlices states, also for a tilted
    stack; also the first value of ``spacing_mm_zyx``). A through-plane output's slice spacing is
    the target's only as far as a whole number of slices fills the same field of view
    (:mod:`medsr.slice_grid`): 1.2727 mm for 1.3 mm asked of 7 slices 2 mm apart. A series
    over time (``channels="time"``) adds ``time_points``."""
    from medsr.slice_grid import slice_spacing

    s = slice_spacing(image)
    grid: dict[str, Any] = {
        "shape_zyx": [int(n) for n in image.spatial_shape],
        "spacing_mm_zyx": [s, *(float(v) for v in image.spacing[1:])],
        "slice_spacing_mm": s,
    }
    if image.channels == "time":  # a series over time: every time point on that grid
        grid["time_points"] = int(image.array.shape[0])
    return grid


#: ``medsr upscale`` options that :func:`upscale_file` spells otherwise
CLI_SPELLINGS = {
    "maps": "maps_dir",
    "series": "series_uid",
    "budget": "budget_s",
    "adapt": "adapt_steps",
}


def check_upscale_options(options: dict[str, Any], *, method: str, through_plane: bool) -> None:
    """:func:`upscale_file`'s further keywords, checked before any input is read: each one a
    keyword of what runs them — :func:`upscale_with_safeguards` and
    :class:`~medsr.inference.planes.PlaneUpscaler` (in-plane model),
    :func:`medsr.selfsup.zero_shot_upscale` or :func:`medsr.selfsup.through_plane_upscale` — that
    ``upscale_file`` does not set itself. A ``TypeError`` otherwise, as Python's own, naming the
    Python spelling of a command-line option (``maps`` → ``maps_dir``)."""
    import inspect

    if through_plane:
        from medsr.selfsup import through_plane_upscale

        targets: tuple[Any, ...] = (through_plane_upscale,)
        bound = {"target_spacing", "prior", "device", "consistency", "maps", "init", "model"}
    elif method == "zero-shot":
        from medsr.selfsup import zero_shot_upscale

        targets = (zero_shot_upscale,)
        bound = {"scale", "budget_s", "init", "device", "model"}
    else:
        from medsr.inference.planes import PlaneUpscaler

        targets = (upscale_with_safeguards, PlaneUpscaler.__init__)
        bound = {
            "scale", "model", "consistency", "degradation", "maps", "tta", "warn", "device",
            "precision", "ensemble", "output", "base",
        }  # fmt: skip
    accepted = {
        name
        for fn in targets
        for name, param in inspect.signature(fn).parameters.items()
        if param.kind is inspect.Parameter.KEYWORD_ONLY
        or (param.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD and name not in ("self", "image"))
    } - bound
    for name in options:
        if name in accepted:
            continue
        if name in CLI_SPELLINGS:
            hint = f": the command line's --{name} is {CLI_SPELLINGS[name]}= in Python"
        else:
            hint = f" (besides its own, it takes: {', '.join(sorted(accepted))})"
        raise TypeError(f"upscale_file() got an unexpected keyword argument {name!r}{hint}")


def upscale_file(
    input_path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    scale: int | None = None,
    model: str | os.PathLike[str] | LoadedModel | None = None,
    device: str = "auto",
    series_uid: str | None = None,
    luminance: bool = False,
    overwrite: bool = False,
    method: str = "model",
    through_plane: bool = False,
    target_spacing: float | None = None,
    budget_s: float | None = ZERO_SHOT_BUDGET_S,
    init: str | None = None,
    consistency: str = CONSISTENCY_DEFAULT,
    degradation: str | None = None,
    modality: str | None = None,
    maps_dir: str | os.PathLike[str] | None = None,
    warnings_out: list[str] | None = None,
    precision: str = "fp32",
    ensemble: bool = False,
    output_dtype: str | None = None,
    grid_out: dict[str, Any] | None = None,
    **upscale_options: Any,
) -> Path:
    """Read ``input_path``, upscale, write ``output``; return the path written.

    ``method="model"`` upscales in-plane with ``model`` through :func:`upscale_with_safeguards`
    (``consistency``, ``degradation`` — the stated physics —, maps in ``maps_dir``, provenance in
    every output); ``method="zero-shot"`` trains a small network on the image itself for
    ``budget_s`` seconds (:data:`~medsr.durations.ZERO_SHOT_BUDGET_S` by default, as on every
    front end; optionally fine-tuning ``init``); ``through_plane=True`` super-resolves
    a thick-slice volume along z to isotropic voxels, ``target_spacing`` mm or ``scale``× more
    slices (one of the two; ``scale`` is otherwise the in-plane factor, default 2). ``modality``
    sets the modality of formats that carry none (NIfTI, PNG, TIFF, .npy). ``ensemble``: the
    mean of the model's outputs for the 8 flips/rotations (:func:`upscale_with_safeguards`).
    ``output_dtype``: how a NIfTI output stores its values (:func:`writer_options`). Warnings
    (consistency, out-of-distribution) are appended to ``warnings_out``. ``grid_out``, a dict,
    receives the written output's grid (:func:`output_grid`: shape, spacing, the slice spacing
    achieved — a through-plane target spacing is met as far as a whole number of slices allows).

    Everything is checked before any work: that the input exists and ``output`` does not
    (unless ``overwrite``) and is not the input, then the options (:func:`check_options`, and
    :func:`check_upscale_options` for further keywords: ``medsr upscale --maps`` is ``maps_dir``
    here, ``--series`` ``series_uid``, ``--budget`` ``budget_s`` and ``--adapt`` ``adapt_steps``).
    Nothing is written unless the whole result is valid.
    """
    from medsr.io import check_holds, load_image

    z_scale = scale if through_plane else None  # through-plane: the factor along z, when given
    if z_scale is not None and target_spacing is not None:
        raise InvalidParameterError(
            "through-plane upscaling takes --scale (more slices) or --target-spacing (mm), not both"
        )
    scale = 2 if scale is None else scale

    # the paths first: a missing input or an existing output fails at once, before the options'
    # check loads torch and the model (about 1.5 s)
    target = check_paths(input_path, output, overwrite, maps_dir)
    write = writer_options(target, output_dtype)
    loaded = check_options(
        scale=scale, model=model, method=method, through_plane=through_plane,
        target_spacing=target_spacing, consistency=consistency, degradation=degradation,
        modality=modality, precision=precision, init=init, budget_s=budget_s,
        epochs=upscale_options.get("epochs"), adapt_steps=upscale_options.get("adapt_steps", 0),
        ensemble=ensemble, device=device,
    )  # fmt: skip
    check_upscale_options(upscale_options, method=method, through_plane=through_plane)
    options: dict[str, Any] = {"luminance": luminance}
    if series_uid:
        options["series_uid"] = series_uid
    image = set_modality(load_image(input_path, **options), modality)
    # an output format that cannot hold the image: refused now, not after the model ran
    from medsr.io.dicom.write import _from_dicom

    check_holds(image, target, series_ok=_from_dicom(image.meta)[0])
    nz, ny, nx = image.spatial_shape
    if through_plane:
        from medsr.slice_grid import output_slices, positive_mm, slice_spacing

        if z_scale is not None:  # as the web service's through-plane jobs: z spacing ÷ scale
            target_spacing = slice_spacing(image) / check_scale(z_scale)
        # the through-plane rule's slice count; a target it refuses is refused there, in its order
        grid = min(image.spacing[1:]) if target_spacing is None else positive_mm(target_spacing)
        if grid is not None:
            check_output_size(image, (output_slices(image, grid), ny, nx), target)
        return _through_plane_file(
            image, target, model=model, method=method, init=init, target_spacing=target_spacing,
            consistency=consistency, device=device, maps_dir=maps_dir, overwrite=overwrite,
            write_options=write, grid_out=grid_out, **upscale_options,
        )  # fmt: skip
    check_output_size(image, (nz, ny * scale, nx * scale), target)
    if loaded is None:  # zero-shot in-plane
        from medsr.selfsup import zero_shot_upscale

        if model not in (None, "default"):
            upscale_options.setdefault("model", model)
        result = zero_shot_upscale(
            image, scale, budget_s=budget_s, init=init, device=device, **upscale_options
        )
        result, summary = zero_shot_checked(
            image, result, scale, consistency=consistency, maps=maps_dir is not None
        )
        if warnings_out is not None:
            warnings_out.extend(str(w) for w in summary.get("warnings", []))
        written = save_safeguarded(
            result, target, summary=summary, maps_dir=maps_dir, overwrite=overwrite, **write
        )
        if grid_out is not None:
            grid_out.update(output_grid(result))
        return written
    result, summary = upscale_with_safeguards(
        image, scale, loaded, consistency=consistency, degradation=degradation,
        maps=maps_dir is not None, tta=maps_dir is not None, warn=False, device=device,
        precision=precision, ensemble=ensemble, **upscale_options,
    )  # fmt: skip
    written = save_safeguarded(
        result, target, summary=summary, maps_dir=maps_dir, overwrite=overwrite, **write
    )
    if warnings_out is not None:
        warnings_out.extend(str(w) for w in summary.get("warnings", []))
    if grid_out is not None:
        grid_out.update(output_grid(result))
    return written
