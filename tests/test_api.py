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


def test_upscale_file_names_the_python_spelling_of_a_command_line_option(tmp_path: Path):
    """``maps=`` (the command line's ``--maps``) gave "upscale_with_safeguards() got multiple
    values for keyword argument 'maps'", and a misspelt keyword a TypeError of PlaneUpscaler,
    both after the input was read. Now they are upscale_file's own TypeError, before the input is
    read (this one is not a NIfTI at all), naming what to write instead."""
    source = tmp_path / "in.nii.gz"
    source.write_bytes(b"\x1f\x8b" + bytes(100))  # gzip magic, then nothing: unreadable
    out = tmp_path / "out.nii.gz"
    with pytest.raises(
        TypeError,
        match=r"^upscale_file\(\) got an unexpected keyword argument 'maps': "
        r"the command line's --maps is maps_dir= in Python$",
    ):
        medsr.upscale_file(source, out, model="bicubic", maps=tmp_path / "maps")
    with pytest.raises(TypeError, match=r"'series': the command line's --series is series_uid="):
        medsr.upscale_file(source, out, model="bicubic", series="1.2.3")
    with pytest.raises(
        TypeError,
        match=r"^upscale_file\(\) got an unexpected keyword argument 'consistancy' "
        r"\(besides its own, it takes: batch_size, clip, .*tile",
    ):
        medsr.upscale_file(source, out, model="bicubic", consistancy="on")
    with pytest.raises(TypeError, match=r"'adapt': the command line's --adapt is adapt_steps="):
        medsr.upscale_file(source, out, through_plane=True, adapt=3)
    assert not out.exists() and not (tmp_path / "maps").exists()
