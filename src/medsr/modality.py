"""DICOM modality codes and the groups medsr treats alike (core: imported by every layer)."""

from __future__ import annotations

__all__ = [
    "DEFAULT_KIND",
    "IN_PLANE_PHYSICS",
    "MODALITIES",
    "MODALITY_GROUPS",
    "default_kind",
    "degradation_help",
    "modality_group",
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
