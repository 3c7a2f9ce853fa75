"""Fixtures for the DICOM reader/writer tests: corpus lookup and synthetic series builders."""

from __future__ import annotations

import copy
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid


def dicom_corpus_path(name: str) -> Path:
    """A corpus DICOM file (CORPUS.md) by name; never downloads; skips if not installed."""
    from pydicom.data import get_testdata_file

    found = get_testdata_file(name, download=False)
    if found is None:
        pytest.skip(f"corpus file {name} is not installed")
    return Path(found)


@pytest.fixture
def dicom_corpus() -> Callable[[str], Path]:
    return dicom_corpus_path


def make_ct_slice(
    template: Dataset,
    *,
    pixels: np.ndarray,
    ipp: Sequence[float] | None,
    iop: Sequence[float] | None = (1, 0, 0, 0, 1, 0),
    pixel_spacing: Sequence[float] = (0.5, 0.5),
    series_uid: str,
    instance: int,
) -> Dataset:
    """A CT slice built from CT_small's header with new geometry and int16 pixels."""
    ds = copy.deepcopy(template)
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SeriesInstanceUID = series_uid
    ds.InstanceNumber = instance
    rows, cols = pixels.shape
    ds.Rows, ds.Columns = rows, cols
    ds.PixelSpacing = [f"{v:.10g}" for v in pixel_spacing]
    if iop is None:
        for key in ("ImageOrientationPatient", "ImagePositionPatient", "SliceLocation"):
            if key in ds:
                del ds[key]
    else:
        ds.ImageOrientationPatient = [f"{v:.10f}" for v in iop]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in ipp]
        normal = np.cross(np.asarray(iop[:3], float), np.asarray(iop[3:], float))
        ds.SliceLocation = f"{float(np.dot(normal, ipp)):.6f}"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.PixelData = np.ascontiguousarray(pixels.astype("<i2")).tobytes()
    ds["PixelData"].VR = "OW"
    return ds


@pytest.fixture
def ct_template(dicom_corpus) -> Dataset:
    return pydicom.dcmread(dicom_corpus("CT_small.dcm"))


def write_series(
    folder: Path, datasets: Sequence[Dataset], names: Sequence[str] | None = None
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, ds in enumerate(datasets):
        name = names[i] if names else f"slice{i:03d}.dcm"
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        pydicom.dcmwrite(folder / name, ds, enforce_file_format=True)
    return folder


def dciodvfy_errors(path: Path) -> set[str]:
    """The set of normalised 'Error' lines dciodvfy reports for one file."""
    exe = shutil.which("dciodvfy")
    assert exe is not None
    proc = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=120)
    lines = (proc.stderr + "\n" + proc.stdout).splitlines()
    return {" ".join(line.split()) for line in lines if line.startswith("Error")}
