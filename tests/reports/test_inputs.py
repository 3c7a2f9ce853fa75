"""What an evaluation reads: a DICOM series under --data is one reference, not one per slice."""

from __future__ import annotations

import shutil

import pytest

from medsr.errors import InvalidParameterError
from medsr.reports.inputs import check_options, discover_inputs
from tests.reports.conftest import make_series


def test_a_series_folder_is_one_volume(series_folder):
    (ref,) = discover_inputs([series_folder])
    assert (ref.path, ref.name, ref.n_files) == (series_folder, "series", 8)
    assert ref.load().spatial_shape == (8, 128, 128)


def test_series_beside_other_images_and_in_subfolders(tmp_path, corpus):
    data = tmp_path / "data"
    make_series(data / "patient1" / "ct", 4, tag="a")
    make_series(data / "mixed", 4, tag="b")
    make_series(data / "mixed", 6, tag="c")  # two series in one folder: one volume each
    shutil.copy(corpus("MR_small.dcm"), data / "MR_small.dcm")  # a series of one file
    shutil.copy(corpus("camera.png"), data / "camera.png")
    (data / "notes.txt").write_text("not an image\n")
    refs = discover_inputs([data])
    shapes = sorted((r.n_files, r.load().spatial_shape[0]) for r in refs)
    assert shapes == [(1, 1), (1, 1), (4, 4), (4, 4), (6, 6)]
    names = sorted(r.name for r in refs)
    assert names[:3] == ["MR_small.dcm", "camera.png", "ct"]
    assert all(n.startswith("mixed [series ") for n in names[3:]) and names[3] != names[4]


def test_each_stack_of_a_series_is_one_reference(tmp_path):
    """Two echoes under one Series Instance UID made one reference that failed to read ("holds
    2 stacks of images, not one volume"): ``medsr evaluate`` stopped with "no image could be
    evaluated". Each stack is a reference of its own, named as ``--series KEY:N`` reads it."""
    import pydicom

    from medsr.io.dicom import series_key

    folder = tmp_path / "mri"
    files = make_series(folder, 3, tag="a") + make_series(folder, 3, tag="b")
    uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
    for k, f in enumerate(files):
        ds = pydicom.dcmread(f)
        ds.SeriesInstanceUID, ds.EchoNumbers = uid, 1 + k // 3
        ds.save_as(f)
    refs = discover_inputs([tmp_path])
    key = series_key(uid)
    assert [(r.name, r.n_files) for r in refs] == [
        (f"mri [series {key}:1]", 3),
        (f"mri [series {key}:2]", 3),
    ]
    assert [r.load().meta["source_paths"] for r in refs] == [
        [str(f) for f in files[:3]],
        [str(f) for f in files[3:]],
    ]


def test_a_file_named_directly_is_one_image(series_folder):
    refs = discover_inputs([series_folder / "a_001.dcm", series_folder / "a_002.dcm"])
    assert [r.name for r in refs] == ["a_001.dcm", "a_002.dcm"]
    assert refs[0].load().spatial_shape[0] == 1


@pytest.mark.parametrize("name", ["broken.dcm", "broken.dic"])
def test_unreadable_dicom_stays_listed_to_be_reported(tmp_path, corpus, name):
    """A damaged file named as DICOM is reported, not passed over (``.dic``, which the library's
    one list of DICOM names holds, was not in the evaluation's own copy of it)."""
    data = corpus("CT_small.dcm").read_bytes()
    (tmp_path / name).write_bytes(data[: len(data) // 2])
    (ref,) = discover_inputs([tmp_path])
    assert ref.name == name


@pytest.mark.parametrize(
    ("models", "max_slices", "device", "match"),
    [
        ([""], 16, "cpu", "empty"),
        (["bicubic", " ", "lanczos"], 16, "cpu", "empty"),
        (["bicubic"], 0, "cpu", "at least 1"),
        (["bicubic"], -3, "cpu", "at least 1"),
        (["bicubic"], 2.5, "cpu", "whole number"),
        (["bicubic"], 16, "foo", "unknown device"),
    ],
)
def test_check_options_refuses(models, max_slices, device, match):
    with pytest.raises(InvalidParameterError, match=match):
        check_options(models, max_slices, device)
