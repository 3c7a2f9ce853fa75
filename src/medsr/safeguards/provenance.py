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

import hashlib
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from medsr.image import MedImage

__all__ = ["attach_provenance", "model_checksum", "provenance", "summary_text"]


@lru_cache(maxsize=32)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def weights_path(model: str | os.PathLike[str] | None) -> Path | None:
    """The weights file behind ``model`` (a shipped name or a path), ``None`` for others."""
    if model is None:
        return None
    from medsr.models.pretrained import pretrained_path

    shipped = pretrained_path(str(model))
    if shipped:
        return shipped
    p = Path(str(model))
    if str(model).endswith(".safetensors") or p.is_file():
        return p if p.is_file() else None
    return None


def model_checksum(model: str | os.PathLike[str] | None, scale: int | None = None) -> str:
    """``sha256:<hex>`` of the weights file, or ``classical:<name>`` for a registered model
    without weights (``None`` → the default model for ``scale``)."""
    if model is None:
        from medsr.models.pretrained import default_model_name

        model = default_model_name(int(scale or 2))
    p = weights_path(model)
    if p is not None:
        st = p.stat()
        return "sha256:" + _sha256(str(p.resolve()), st.st_size, st.st_mtime_ns)
    return f"classical:{str(model).lower()}"


def _fmt(v: Any) -> str:
    try:
        return f"{float(v):.3g}"
    except (TypeError, ValueError):
        return str(v)


def summary_text(summary: dict[str, Any]) -> str:
    """One line for DICOM DerivationDescription: degradation, consistency, maps, warnings."""
    parts: list[str] = []
    deg = summary.get("degradation") or {}
    if deg:
        parts.append(f"assumed degradation {deg.get('describe', deg.get('kind'))}")
    cons = summary.get("consistency") or {}
    if cons:
        text = f"consistency {cons.get('setting', 'off')}"
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
    unc = summary.get("uncertainty") or {}
    if unc.get("map"):
        m = unc["map"]
        parts.append(
            f"TTA uncertainty mean {_fmt(m.get('mean'))} p99 {_fmt(m.get('p99'))} "
            f"max {_fmt(m.get('max'))} {m.get('units', '')}".rstrip()
        )
    ood = summary.get("ood") or {}
    if ood.get("flag"):
        parts.append("OUT-OF-DISTRIBUTION: " + "; ".join(ood.get("reasons", []))[:300])
    return "; ".join(parts)


def provenance(
    *,
    model: str | os.PathLike[str] | None,
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
    import medsr

    card = card or {}
    name = card.get("name") or (
        Path(str(model)).name.removesuffix(".safetensors") if model else None
    )
    return {
        "medsr_version": medsr.__version__,
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
