"""JSON sidecars: one output never replaces another's sidecar, nor a JSON file medsr did not write.

``scan.png`` and ``scan.nii.gz`` share ``scan.json``. Before the sidecar recorded which file it
describes, the second write replaced the first's, silently: a PNG whose rescale was gone read
back as 0…65535 still labelled HU, a NIfTI lost its ``stored_as`` block, and an unrelated
``other.json`` was replaced by writing ``other.png`` without ``overwrite``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import medsr
from medsr.errors import OutputExistsError
from medsr.image import MedImage
from medsr.io.sidecar import check_sidecar, read_sidecar, sidecar_path
from medsr.pipeline import check_paths

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture
def ct():
    """A 2-D CT slice in HU: a PNG of it needs the sidecar's rescale to read back in HU."""
    arr = np.linspace(-1000, 1500, 16 * 20, dtype=np.float32).reshape(1, 16, 20)
    return MedImage(arr, spacing=(1.0, 0.7, 0.7), modality="CT", units="HU")


def _files(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def _reads_in_hu(path, ct):
    back = medsr.load_image(path)
    assert back.modality == "CT" and back.units == "HU"
    np.testing.assert_allclose(back.array, ct.array, atol=0.05)


@pytest.mark.parametrize(
    "first, second", [(".png", ".nii.gz"), (".nii.gz", ".png"), (".png", ".tif")]
)
def test_same_stem_never_replaces_the_other_sidecar(tmp_path, ct, first, second):
    medsr.save_image(ct, tmp_path / f"sc{first}")
    side = json.loads((tmp_path / "sc.json").read_text())
    assert side["describes"] == f"sc{first}"
    before = _files(tmp_path)
    for overwrite in (False, True):  # without overwrite, not a hint that --overwrite would do
        with pytest.raises(
            OutputExistsError, match=rf"is the sidecar of 'sc{first}'.*never replaced"
        ):
            medsr.save_image(ct, tmp_path / f"sc{second}", overwrite=overwrite)
    assert _files(tmp_path) == before  # nothing written, the first sidecar intact
    _reads_in_hu(tmp_path / f"sc{first}", ct)
    if first == ".nii.gz":
        assert "stored_as" in read_sidecar(tmp_path / "sc.nii.gz")


def test_unrelated_json_is_never_replaced(tmp_path, ct):
    other = tmp_path / "other.json"
    other.write_text('{"a": 1}\n')
    for overwrite in (False, True):
        with pytest.raises(
            OutputExistsError, match="was not written by medsr; it is never replaced"
        ):
            medsr.save_image(ct, tmp_path / "other.png", overwrite=overwrite)
    (tmp_path / "list.json").write_text("[1, 2]")  # JSON, not an object
    with pytest.raises(OutputExistsError, match="not written by medsr"):
        medsr.save_image(ct, tmp_path / "list.nii.gz", overwrite=True)
    assert other.read_text() == '{"a": 1}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["list.json", "other.json"]


def test_overwriting_ones_own_output_still_works(tmp_path, ct):
    out = medsr.save_image(ct, tmp_path / "sc.png")
    with pytest.raises(OutputExistsError, match=r"output '.*sc\.png' already exists"):
        medsr.save_image(ct, out)
    brighter = ct.replace(array=ct.array + 100)
    medsr.save_image(brighter, out, overwrite=True)
    _reads_in_hu(out, brighter)
    (tmp_path / "sc.png").unlink()  # a sidecar left behind is still an output that exists
    with pytest.raises(OutputExistsError, match=r"sc\.json.*already exists; pass --overwrite"):
        medsr.save_image(ct, out)
    medsr.save_image(ct, out, overwrite=True)
    _reads_in_hu(out, ct)


def test_sidecars_written_before_the_record(tmp_path, ct):
    """A sidecar without ``describes`` still reads, is replaced by its own output, and is kept
    when another output of its stem exists (it may be that one's)."""
    out = medsr.save_image(ct, tmp_path / "sc.png")
    side = sidecar_path(out)
    old = json.loads(side.read_text())
    old.pop("describes")
    side.write_text(json.dumps(old))
    _reads_in_hu(out, ct)
    with pytest.raises(OutputExistsError, match=r"may be the sidecar of 'sc\.png'"):
        medsr.save_image(ct, tmp_path / "sc.nii.gz", overwrite=True)
    assert json.loads(side.read_text()) == old
    medsr.save_image(ct, out, overwrite=True)
    assert json.loads(side.read_text())["describes"] == "sc.png"


def test_reader_ignores_the_sidecar_of_another_format(tmp_path, ct):
    """A NIfTI beside ``sc.json`` that describes ``sc.png`` (the NIfTI written by another tool)
    does not take the PNG's modality or units; a pair renamed together still reads."""
    png = medsr.save_image(ct, tmp_path / "sc.png")
    medsr.save_image(
        MedImage(np.zeros((2, 4, 4), np.float32)), tmp_path / "elsewhere" / "sc.nii.gz"
    )
    (tmp_path / "elsewhere" / "sc.nii.gz").rename(tmp_path / "sc.nii.gz")
    assert read_sidecar(tmp_path / "sc.nii.gz") == {}
    assert medsr.load_image(tmp_path / "sc.nii.gz").modality == "OT"
    png.rename(tmp_path / "renamed.png")
    (tmp_path / "sc.json").rename(tmp_path / "renamed.json")
    _reads_in_hu(tmp_path / "renamed.png", ct)


def test_paths_are_checked_before_the_model_runs(tmp_path, corpus, ct):
    """``check_paths`` (what ``upscale_file``, the CLI and ``degrade_file`` call before loading
    a model) refuses the sidecar as it refuses the output; a DICOM output has no sidecar."""
    src = corpus("CT_small.dcm")
    medsr.save_image(ct, tmp_path / "sc.png")
    for overwrite in (False, True):
        with pytest.raises(OutputExistsError, match=r"is the sidecar of 'sc\.png'"):
            check_paths(src, tmp_path / "sc.nii.gz", overwrite=overwrite)
    with pytest.raises(OutputExistsError, match=r"output '.*sc\.png' already exists"):
        check_paths(src, tmp_path / "sc.png")
    assert check_paths(src, tmp_path / "sc.png", overwrite=True) == tmp_path / "sc.png"
    assert check_paths(src, tmp_path / "sc.dcm") == tmp_path / "sc.dcm"
    check_sidecar(tmp_path / "sc", overwrite=False)  # a DICOM series folder: no sidecar


def test_a_tilted_stack_s_sidecar_gives_the_distance_between_its_planes(tmp_path):
    """A gantry-tilted CT, slices 2.5 mm apart along their normal (SpacingBetweenSlices 2.5),
    positions 2.66 mm apart along the table: the sidecar of its output gave spacing_mm_zyx[0]
    2.660444 (the step) while ``medsr info`` of the same file, the upscale grid and
    ``medsr interpolate`` say 2.5. Now the sidecar says 2.5 too, with the step as slice_step_mm,
    and a TIFF (whose grid only the sidecar holds) still reads back on the same grid."""
    from medsr.slice_grid import slice_spacing
    from tests.conftest import make_tilted_ct_series

    image = medsr.load_image(make_tilted_ct_series(tmp_path / "tilted", n=3, size=8))
    step = 2.5 / np.cos(np.deg2rad(20.0))
    assert image.spacing[0] == pytest.approx(step)
    for name in ("out.nii.gz", "out.tif"):
        out = medsr.save_image(image, tmp_path / name)
        side = json.loads(sidecar_path(out).read_text())
        assert side["spacing_mm_zyx"][0] == pytest.approx(2.5)
        assert side["spacing_mm_zyx"][1:] == pytest.approx(list(image.spacing[1:]))
        assert side["slice_step_mm"] == pytest.approx(step)
        back = medsr.load_image(out)
        assert side["spacing_mm_zyx"][0] == pytest.approx(back.summary()["spacing_mm_zyx"][0])
        assert back.spacing == pytest.approx(image.spacing)
        assert slice_spacing(back) == pytest.approx(2.5)
        np.testing.assert_allclose(back.affine, image.affine, atol=1e-6)
        sidecar_path(out).unlink()
    # a straight stack's sidecar is as before: no slice_step_mm
    plain = MedImage(np.zeros((2, 4, 4), np.float32), spacing=(3.0, 1.0, 1.0))
    side = json.loads(sidecar_path(medsr.save_image(plain, tmp_path / "p.tif")).read_text())
    assert side["spacing_mm_zyx"] == [3.0, 1.0, 1.0] and "slice_step_mm" not in side
