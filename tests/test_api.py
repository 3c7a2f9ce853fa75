"""The Python API as a new user calls it: what it takes, and the errors it gives otherwise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import medsr
from medsr.pipeline import upscale_with_safeguards


@pytest.mark.parametrize(
    "call",
    [
        lambda x, out: medsr.upscale(x, 2, "bicubic"),
        lambda x, out: upscale_with_safeguards(x, 2, "bicubic"),
        lambda x, out: medsr.save_image(x, out),
    ],
    ids=["upscale", "upscale_with_safeguards", "save_image"],
)
def test_an_array_or_a_path_instead_of_a_medimage_is_a_clear_type_error(call, tmp_path: Path):
    """A NumPy array or a file path where a MedImage is taken: a TypeError that says what to do
    (it was ``AttributeError: 'numpy.ndarray' object has no attribute 'array'`` from inside)."""
    out = tmp_path / "out.nii.gz"
    array = np.ones((16, 16), np.float32)
    with pytest.raises(
        TypeError,
        match=r"takes a MedImage, got ndarray: wrap an array as "
        r"medsr\.MedImage\(array, spacing=\(z, y, x\)\)",
    ):
        call(array, out)
    with pytest.raises(TypeError, match=r"got PosixPath: read a file with medsr\.load_image"):
        call(tmp_path / "in.nii.gz", out)
    assert not out.exists()
