"""DICOM modality codes and the groups medsr treats alike (core: imported by every layer)."""

from __future__ import annotations

__all__ = ["MODALITIES", "MODALITY_GROUPS", "modality_group"]

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
