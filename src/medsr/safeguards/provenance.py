"""Provenance: what made an output, recorded in every format medsr writes.

:func:`provenance` gathers medsr's version, the model's name and checksum (SHA-256 of its
weights file, or ``classical:<name>`` for interpolators), the scale, the degradation assumed by
the consistency check, the consistency setting and the summary of the trust maps.
:func:`attach_provenance` puts it where the writers look:

* ``meta["provenance"]`` — the full record; the JSON sidecar of NIfTI/PNG/TIFF/npy outputs
  writes it (:func:`medsr.io.sidecar.sidecar_dict`) and the web service returns it per job;
* ``meta["derivation"]`` — short keys (``model_checksum``, ``degradation``, ``consistency``)
  and ``summary``, a one-line text that the DICOM writer puts into DerivationDescription
  (≤ 1024 characters) and ContributingEquipmentSequence.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from medsr.image import MedImage
from medsr.models.resolver import LoadedModel

__all__ = ["attach_provenance", "consistency_label", "model_checksum", "provenance", "summary_text"]


def model_checksum(
    model: str | os.PathLike[str] | LoadedModel | None, scale: int | None = None
) -> str:
    """The model's one identity (:attr:`medsr.models.resolver.LoadedModel.checksum`):
    ``sha256:<hex>`` of its weights file, or ``classical:<name>`` for an interpolator
    (``None`` → the default model for ``scale``); ``name:<text>`` for what no resolver knows
    (the network a zero-shot run trained on the image itself)."""
    from medsr.errors import MedSRError
    from medsr.models.resolver import resolve_model

    if isinstance(model, LoadedModel):
        return model.checksum
    try:
        return resolve_model(
            model, scale=scale if model is None or scale is None else None
        ).checksum
    except MedSRError:
        return f"name:{str(model).lower()}"


def consistency_label(cons: dict[str, Any], *, why: bool = False) -> str:
    """What the consistency step did, in the words every record uses (the provenance record,
    the DICOM derivation text, the sidecar's summary, the web job's metrics), from a safeguards
    summary's ``consistency`` entry: ``on``, ``off``, ``auto (projected)`` or ``auto (measured
    only)`` (``auto (not applied)`` where no error was measured either, as through-plane).
    ``why`` adds the reason an ``auto`` setting did not project (the entry's own ``reason`` where
    it gives one: a through-plane output's estimated slice profile)."""
    setting = str(cons.get("setting", "off"))
    applied = bool(cons.get("applied"))
    if setting == "auto":
        if applied:
            return "auto (projected)"
        done = "measured only" if cons.get("error") else "not applied"
        if why:
            reason = (
                "projection too slow for auto; --consistency on applies it"
                if cons.get("skipped")
                else str(cons.get("reason") or "physics not stated")
            )
            done += f": {reason}"
        return f"auto ({done})"
    if setting == "on" and not applied:
        return "on (not applied)"
    return setting


def _fmt(v: Any) -> str:
    try:
        return f"{float(v):.3g}"
    except (TypeError, ValueError):
        return str(v)


def _uncertainty_kind(unc: dict[str, Any]) -> str:
    """What an uncertainty map is, in a few words: the test-time augmentation spread of an
    in-plane output, the sagittal/coronal spread of a through-plane one."""
    if "sagittal" in str(unc.get("method", "")):
        return "z-uncertainty (sagittal/coronal spread)"
    return "TTA uncertainty"


def _time_point(check: dict[str, Any]) -> str:
    """`` at time point N of T`` for a detail check of an image over time, which fits each time
    point on its own and reports the one whose detail holds up least (``time_point``)."""
    each = check.get("time_points")
    if not each or check.get("time_point") is None:
        return ""
    return f" at time point {int(check['time_point']) + 1} of {len(each)}"


def summary_text(summary: dict[str, Any]) -> str:
    """One line for DICOM DerivationDescription: degradation, consistency, maps, warnings."""
    parts: list[str] = []
    deg = summary.get("degradation") or {}
    if deg:
        parts.append(f"assumed degradation {deg.get('describe', deg.get('kind'))}")
    cons = summary.get("consistency") or {}
    if cons:
        text = f"consistency {consistency_label(cons, why=True)}"
        err = cons.get("error") or {}
        if err:
            units = err.get("units", "")
            text += (
                f", |degrade(SR)-input| mean {_fmt(err.get('mean'))} p99 {_fmt(err.get('p99'))} "
                f"max {_fmt(err.get('max'))} {units}".rstrip()
            )
        if cons.get("exceeded"):
            text += f" (WARNING: p99 above {_fmt(cons.get('threshold_rel', 0) * 100)}% of range)"
        parts.append(text)
    check = summary.get("self_check") or {}
    if check.get("checked"):
        text = f"detail self-check alpha {_fmt(check.get('alpha'))}{_time_point(check)}"
        if check.get("applied"):
            text += f" (detail scaled x{_fmt(check.get('gain'))})"
        parts.append(text)
    full = check.get("full_scale") or {}
    if full.get("checked") and full.get("alpha") is not None:
        text = f"full-scale detail check g {_fmt(full.get('alpha'))}{_time_point(full)}"
        if full.get("applied"):
            text += f" (output = {full.get('over')} + {_fmt(full.get('gain'))} x its departure)"
        parts.append(text)
    unc = summary.get("uncertainty") or {}
    if unc.get("map"):
        m = unc["map"]
        parts.append(
            f"{_uncertainty_kind(unc)} mean {_fmt(m.get('mean'))} p99 {_fmt(m.get('p99'))} "
            f"max {_fmt(m.get('max'))} {m.get('units', '')}".rstrip()
        )
    bound = summary.get("error_bound") or {}
    if bound.get("map"):
        m = bound["map"]
        parts.append(
            f"error bound ({bound.get('coverage', 0.9):.0%} of voxels, k {_fmt(bound.get('factor'))}) "
            f"mean {_fmt(m.get('mean'))} p99 {_fmt(m.get('p99'))} {m.get('units', '')}".rstrip()
        )
    elif bound and not bound.get("calibrated"):  # asked for, and why there is none
        parts.append(f"no error bound: {bound.get('reason', 'not calibrated')}"[:200])
    ood = summary.get("ood") or {}
    if ood.get("flag"):
        parts.append("OUT-OF-DISTRIBUTION: " + "; ".join(ood.get("reasons", []))[:300])
    return "; ".join(parts)


def provenance(
    *,
    model: str | os.PathLike[str] | LoadedModel | None,
    card: dict[str, Any] | None,
    scale: int,
    degradation: str | None,
    consistency: str,
    summary: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The provenance record of one output (JSON-able; no paths, no patient data).

    Run times (``timing_ms`` of the safeguards summary) are left out: they are not provenance,
    and without them the same input, model and settings give byte-identical sidecars (a batch
    rerun, or the local and Ray batch engines, agree).
    """
    from medsr._version import __version__

    if isinstance(model, LoadedModel):
        card = card or model.card
    card = card or {}
    name = card.get("name") or (
        Path(str(model)).name.removesuffix(".safetensors") if model else None
    )
    return {
        "medsr_version": __version__,
        "model": name,
        "model_version": card.get("version"),
        "model_checksum": model_checksum(model, scale),
        "scale": int(scale),
        "degradation": degradation,
        "consistency": consistency,
        "safeguards": {k: v for k, v in summary.items() if k != "timing_ms"}
        if summary is not None
        else None,
    }


def attach_provenance(image: MedImage, record: dict[str, Any]) -> MedImage:
    """A copy of ``image`` whose meta carries ``record`` (see the module docstring)."""
    meta = dict(image.meta)
    meta["provenance"] = record
    derivation = dict(meta.get("derivation") or {})
    derivation.update(
        {
            "model_checksum": record.get("model_checksum"),
            "degradation": record.get("degradation"),
            "consistency": record.get("consistency"),
        }
    )
    if record.get("safeguards"):
        derivation["summary"] = summary_text(record["safeguards"])[:700]
    meta["derivation"] = derivation
    return image.replace(meta=meta)
