"""A small DICOM series for the evaluation tests: slices of one Series Instance UID."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import corpus_path


def make_series(folder: Path, n: int = 8, *, tag: str = "a") -> list[Path]:
    """``n`` slices of CT_small.dcm (each shifted a little, so that they differ as neighbouring
    slices do) in one series: own Series UID, distinct SOP UIDs, positions ``SliceThickness``
    apart."""
    import pydicom
    from pydicom.uid import generate_uid

    src = pydicom.dcmread(corpus_path("CT_small.dcm"))
    pixels = src.pixel_array
    series_uid = generate_uid(entropy_srcs=[str(folder), tag, "series"])
    gap = float(src.get("SliceThickness", 5.0) or 5.0)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        ds = copy.deepcopy(src)
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[str(folder), tag, str(i)])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ipp = [float(v) for v in src.ImagePositionPatient]
        ipp[2] += i * gap
        ds.ImagePositionPatient = ipp
        ds.InstanceNumber = i + 1
        if "SliceLocation" in ds:
            ds.SliceLocation = float(ds.SliceLocation) + i * gap
        ds.PixelData = (
            np.ascontiguousarray(np.roll(pixels, i, axis=1)).astype(pixels.dtype).tobytes()
        )
        path = folder / f"{tag}_{i + 1:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        out.append(path)
    return out


@pytest.fixture
def series_folder(tmp_path) -> Path:
    """A folder holding one 8-slice DICOM series (and nothing else)."""
    make_series(tmp_path / "series")
    return tmp_path / "series"
