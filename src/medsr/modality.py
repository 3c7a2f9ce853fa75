"""DICOM modality codes, the groups medsr treats alike, and stating the modality of an input whose
format carries none (core: imported by every layer; numpy only when a modality is set)."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

from medsr.errors import InvalidParameterError, MedSRWarning

if TYPE_CHECKING:  # numpy and the image type are needed only when a modality is set
    import numpy as np

    from medsr.image import MedImage

__all__ = [
    "DEFAULT_KIND",
    "IN_PLANE_PHYSICS",
    "MODALITIES",
    "MODALITY_GROUPS",
    "check_modality",
    "default_kind",
    "degradation_help",
    "modality_group",
    "set_modality",
]

#: modality codes handled alike (DICOM (0008,0060) values): default degradations, normalisation,
#: physics read from a header
MODALITY_GROUPS: dict[str, tuple[str, ...]] = {
    "CT": ("CT",),
    "MR": ("MR",),
    "radiograph": ("CR", "DX", "MG", "XA", "RF", "RG", "PX", "IO", "DF"),
    "US": ("US", "IVUS"),
    "NM": ("NM", "PT"),
}

#: codes a user may state for formats that carry none (``--modality``: NIfTI, PNG, TIFF, .npy)
MODALITIES = ("CT", "MR", "CR", "DX", "MG", "RG", "US", "NM", "PT", "XA", "RF", "OT")


def modality_group(modality: str | None) -> str:
    """The group of a DICOM modality code (``"default"`` when none fits)."""
    code = (modality or "OT").strip().upper()
    for group, codes in MODALITY_GROUPS.items():
        if code in codes:
            return group
    return "default"


def check_modality(modality: str) -> str:
    """The DICOM code ``modality`` names (one of :data:`medsr.modality.MODALITIES`), or a clear error."""
    code = str(modality).strip().upper()
    if code not in MODALITIES:
        raise InvalidParameterError(
            f"modality must be one of {', '.join(MODALITIES)}; got {modality!r}"
        )
    return code


def set_modality(image: MedImage, modality: str | None) -> MedImage:
    """``image`` with its modality set to the DICOM code ``modality`` (``None``: unchanged).

    Only formats that carry no modality take it (NIfTI, PNG, TIFF, .npy: ``OT``); a DICOM
    input keeps the modality its header states (a warning says so when ``modality`` differs).
    ``CT`` on an image of unknown units whose values read as Hounsfield units
    (:func:`_looks_like_hu`) labels them HU."""
    if modality is None:
        return image
    code = check_modality(modality)
    stated = (image.modality or "OT").upper()
    if image.meta.get("format") == "dicom" and stated != "OT":
        if stated != code:
            warnings.warn(
                f"the DICOM header states modality {stated}: --modality {code} applies only to "
                "inputs that carry none (NIfTI, PNG, TIFF, .npy)",
                MedSRWarning,
                stacklevel=2,
            )
        return image
    units = image.units
    if code == "CT" and units in ("a.u.", "", None) and _looks_like_hu(image.array):
        # a CT NIfTI stores Hounsfield units (dcm2niix applies the rescale): stating the modality
        # states them too, and with them the CT rules that need HU (the scanner's fill outside
        # the reconstruction circle kept exact: medsr.io.padding.no_data_mask)
        units = "HU"
    return image.replace(modality=code, units=units)


#: a CT in Hounsfield units measures air (−1000 HU) or holds a fill below it; raw stored values
#: (0–4095 before the rescale) do not go below 0
HU_AIR_BELOW = -500.0


def _looks_like_hu(array: np.ndarray) -> bool:
    """Whether a CT's values read as Hounsfield units: finite ones reach below
    :data:`HU_AIR_BELOW` (air or a fill) and stay within what a CT stores (−32768…32767)."""
    import numpy as np

    ok = np.isfinite(array)
    finite = array if ok.all() else array[ok]
    if not finite.size:
        return False
    lo, hi = float(finite.min()), float(finite.max())
    return lo < HU_AIR_BELOW and lo >= -32768 and hi <= 32767


#: the in-plane physics a user can state (``--degradation KIND``): the kinds of
#: ``medsr degrade --kind`` that medsr can check and project (their parameters are
#: :data:`medsr.safeguards.operators.DEFAULT_PARAMS`; a test keeps the two equal)
IN_PLANE_PHYSICS = (
    "bicubic",
    "kspace",
    "ct-detector",
    "radiograph",
    "ultrasound",
    "ct-sparse-view",
)

#: deterministic in-plane degradation per modality group (a group not named: ``bicubic``), used by
#: ``--degradation auto|default`` (evaluation, ``medsr degrade``, the upscaling front ends)
DEFAULT_KIND = {
    "CT": "ct-detector",
    "MR": "kspace",
    "radiograph": "radiograph",
    "US": "bicubic",
    "NM": "bicubic",
}

#: how the help names a group whose usual physics is not bicubic
_GROUP_WORDS = {"radiograph": "projection radiography"}


def default_kind(modality: str | None) -> str:
    """Registry name of the deterministic degradation that fits ``modality`` (``bicubic`` if none).

    Ultrasound maps to ``bicubic`` because the ``ultrasound`` model reduces only the lateral axis,
    which an in-plane (both-axes) upscaler cannot invert; use it explicitly for lateral studies.
    """
    return DEFAULT_KIND.get(modality_group(modality), "bicubic")


def degradation_help(subject: str, whose: str) -> str:
    """The ``--degradation`` help of every upscaling front end, made from the lists above.

    ``subject`` names what the physics made (``"the input"``), ``whose`` whose header and
    modality ``auto``/``default`` read (``"the"``, ``"each input's"``).
    """
    usual = ", ".join(
        f"{_GROUP_WORDS.get(group, group)} {kind}"
        for group, kind in DEFAULT_KIND.items()
        if kind != "bicubic"
    )
    return (
        f"The physics that made {subject}: a kind of `medsr degrade --kind` "
        f"({', '.join(IN_PLANE_PHYSICS)}), auto (from {whose} DICOM header: MR -> kspace), "
        f"default ({whose} modality's usual physics, stated as known: {usual}, others bicubic) "
        "or none (unknown, the default). kspace makes zero-filled k-space the base interpolator."
    )
