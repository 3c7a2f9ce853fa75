"""The Python API as a new user calls it: what it takes, and the errors it gives otherwise."""

from __future__ import annotations

import re
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


def test_a_numpy_integer_scale_is_a_scale(tmp_path: Path):
    """``scale=np.int64(2)`` (a factor computed from shapes or read from an array) was refused
    with "scale must be one of 2, 3, 4; got np.int64(2)"; it is now the same as ``scale=2``,
    recorded as the plain integer. Booleans stay refused."""
    import json

    from medsr.errors import InvalidParameterError
    from medsr.models.resolver import check_scale

    image = medsr.MedImage(np.arange(64, dtype=np.float32).reshape(8, 8), spacing=(2, 1, 1))
    want = medsr.upscale(image, 2, "bicubic")
    for scale in (np.int64(2), np.int32(2), np.float32(2.0)):
        got = medsr.upscale(image, scale, "bicubic")
        np.testing.assert_array_equal(got.array, want.array)
        assert got.spacing == want.spacing == (2.0, 0.5, 0.5)
        assert type(check_scale(scale)) is int
    np.save(tmp_path / "in.npy", image.array)
    out = medsr.upscale_file(
        tmp_path / "in.npy", tmp_path / "out.npy", scale=np.int64(4), model="bicubic"
    )
    assert np.load(out).shape == (32, 32)
    assert json.loads((tmp_path / "out.json").read_text())["provenance"]["scale"] == 4
    for bad in (np.True_, True, np.int64(5)):
        with pytest.raises(InvalidParameterError, match="scale must be one of 2, 3, 4"):
            check_scale(bad)


@pytest.mark.parametrize("shape", [(0, 8, 8), (1, 0, 8), (1, 8, 0)])
def test_an_image_without_pixels_is_refused_with_its_shape(shape):
    """A MedImage with an axis of length 0 (an empty crop) failed inside the resampler ("zero-size
    array to reduction operation fmin") or torch ("Expected 3D or 4D (batch mode) tensor"), or
    as a NaN spacing; now one InvalidParameterError that names the shape."""
    from medsr.errors import InvalidParameterError

    image = medsr.MedImage(np.zeros(shape, np.float32))
    for call in (
        lambda: medsr.upscale(image, 2, "fast-x2"),
        lambda: medsr.upscale(image, 2, "bicubic"),
        lambda: upscale_with_safeguards(image, 2, "bicubic"),
    ):
        with pytest.raises(
            InvalidParameterError,
            match=rf"the image has no pixels \(shape {re.escape(str(shape))}\)",
        ):
            call()


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("batch_size", 0),
        ("batch_size", -3),
        ("batch_size", 1.5),
        ("tile", -5),
        ("tile", float("nan")),
    ],
)
def test_a_batch_size_or_tile_out_of_range_is_refused(option, value):
    """``medsr.upscale(..., batch_size=0)`` ran with one plane per pass and ``tile=-5`` with the
    smallest tile, silently (the command line refuses them): one InvalidParameterError naming the
    option."""
    img = medsr.MedImage(np.zeros((1, 16, 16), np.float32), spacing=(1.0, 1.0, 1.0))
    with pytest.raises(medsr.errors.InvalidParameterError, match=option.replace("_", " ")):
        medsr.upscale(img, scale=2, model="bicubic", **{option: value})


def test_a_whole_number_batch_size_and_tile_are_taken():
    """NumPy integers and whole floats are counts; 0 / None tile means no tiling."""
    from medsr.inference.planes import PlaneUpscaler

    up = PlaneUpscaler("bicubic", 2, batch_size=np.int64(3), tile=0)
    assert (up.batch_size, up.tile, up.tile_size) == (3, 0, None)
    assert type(up.batch_size) is int


def test_an_image_without_pixels_is_not_written(tmp_path):
    """``save_image`` wrote a 0-voxel NIfTI (a file no reader takes back: medsr refuses it as
    holding no pixels); now one InvalidParameterError and no file."""
    img = medsr.MedImage(np.zeros((1, 0, 8), np.float32), spacing=(1.0, 1.0, 1.0))
    for name in ("empty.nii.gz", "empty.png", "empty.dcm"):
        with pytest.raises(medsr.errors.InvalidParameterError, match="no pixels"):
            medsr.save_image(img, tmp_path / name)
        assert not (tmp_path / name).exists()
