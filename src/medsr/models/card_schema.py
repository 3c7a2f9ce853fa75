"""The model card's report sections and their types (Mitchell et al., "Model Cards for Model
Reporting", FAT* 2019): intended and out-of-scope uses, per-image validation results, caveats,
software, the training data's licences and the weights' checksum.

:func:`check_report_sections` is part of :func:`medsr.models.weights.check_card`: a card whose
section has another type is one clear error. :mod:`medsr.models.cards` prints them.
"""

from __future__ import annotations

import re
from typing import Any

from medsr.errors import CorruptInputError

__all__ = ["REPORT_SECTIONS", "check_report_sections"]

#: the model-card sections beyond what rebuilds the network → what each holds
REPORT_SECTIONS: dict[str, str] = {
    "intended_use": "text: what the model is for, and for whom",
    "out_of_scope": "list of text: uses it is not for (where it was not validated or loses)",
    "validation_results": "object: {source, protocol, sets: [{set, scale, degradation, run_as, "
    "baseline, images: [{image, modality, psnr_db, ssim, gain_db, ...}], per_modality: "
    "{MODALITY: {images, mean_gain_db, worst_gain_db}}}]}; images never trained on",
    "caveats": "list of text: what the benchmarks showed it gets wrong or does not cover",
    "software": "object: package → version (null: not recorded)",
    "training_data_licences": "list of {package, licence, stated_in, files}",
    "weights_sha256": "64 hex digits: the sha256 of the .safetensors file's bytes",
}

_HEX64 = re.compile(r"[0-9a-f]{64}")


def _is_text_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) and v.strip() for v in value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _validation_problem(value: Any) -> str | None:
    if not isinstance(value, dict) or not isinstance(value.get("source"), str):
        return "an object with a 'source'"
    sets = value.get("sets")
    if not isinstance(sets, list):
        return "an object with a list of 'sets'"
    for entry in sets:
        if not isinstance(entry, dict) or not isinstance(entry.get("set"), str):
            return "sets that each name their 'set'"
        images = entry.get("images")
        if not isinstance(images, list) or not images:
            return f"set {entry['set']!r} with a list of 'images'"
        for row in images:
            if not (isinstance(row, dict) and isinstance(row.get("image"), str)
                    and isinstance(row.get("modality"), str)):  # fmt: skip
                return f"set {entry['set']!r} whose images each have 'image' and 'modality'"
            bad = [k for k, v in row.items() if k.endswith(("_db", "ssim")) and v is not None
                   and not _is_number(v)]  # fmt: skip
            if bad:
                return f"set {entry['set']!r} whose metrics are numbers ({bad[0]!r} is not)"
        per = entry.get("per_modality", {})
        if not isinstance(per, dict) or not all(isinstance(v, dict) for v in per.values()):
            return f"set {entry['set']!r} whose 'per_modality' maps a modality to its numbers"
    return None


def _section_problem(key: str, value: Any) -> str | None:
    """What ``value`` should be for the report section ``key`` (None: it is)."""
    if key == "intended_use":
        return None if isinstance(value, str) and value.strip() else "non-empty text"
    if key in ("out_of_scope", "caveats"):
        return None if _is_text_list(value) else "a list of non-empty texts"
    if key == "software":
        ok = isinstance(value, dict) and all(
            isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in value.items()
        )
        return None if ok else "an object of package → version text (or null)"
    if key == "training_data_licences":
        ok = isinstance(value, list) and all(
            isinstance(v, dict)
            and isinstance(v.get("package"), str)
            and isinstance(v.get("licence"), str)
            and _is_text_list(v.get("files"))
            for v in value
        )
        return None if ok else "a list of {package, licence, files}"
    if key == "weights_sha256":
        ok = isinstance(value, str) and _HEX64.fullmatch(value) is not None
        return None if ok else "64 lower-case hex digits"
    if key == "validation_results":
        return _validation_problem(value)
    return None


def check_report_sections(card: dict[str, Any], name: str) -> None:
    """One :class:`CorruptInputError` naming ``name`` when a report section of ``card``
    (:data:`REPORT_SECTIONS`) is present but not of its type."""
    for key in REPORT_SECTIONS:
        if key in card:
            problem = _section_problem(key, card[key])
            if problem:
                raise CorruptInputError(f"'{name}' has a model card whose {key} is not {problem}")
