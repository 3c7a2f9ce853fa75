"""A small DICOM series for the evaluation tests: slices of one Series Instance UID."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import make_ct_series


def make_series(folder: Path, n: int = 8, *, tag: str = "a") -> list[Path]:
    """``n`` slices of CT_small.dcm (each shifted a little, so that they differ as neighbouring
    slices do) in one series: own Series UID, distinct SOP UIDs, positions ``SliceThickness``
    apart (:func:`tests.conftest.make_ct_series`)."""
    return make_ct_series(folder, n, tag=tag, vary=True)


@pytest.fixture
def series_folder(tmp_path) -> Path:
    """A folder holding one 8-slice DICOM series (and nothing else)."""
    make_series(tmp_path / "series")
    return tmp_path / "series"
