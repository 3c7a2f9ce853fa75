"""The error bound of a through-plane output: calibrated one scale down along z, against a truth."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medsr.degradations import degrade_image
from medsr.image import MedImage
from medsr.io import load_image
from medsr.pipeline import upscale_through_plane
from medsr.safeguards.error_bound import COVERAGE
from tests.conftest import padded_ct

TOLD = {"slice_thickness": 10.0, "profile": "gaussian", "progress": False, "device": "cpu"}


@pytest.fixture(scope="module")
def aniso_pair(tmp_path_factory):
    """dipy's aniso_vox (never trained on: no prior's data) as the truth, 12 slices of 5 mm on a
    24² crop, and its ×2 Gaussian thick-slice degradation (10 mm) as the input."""
    from tests.conftest import corpus_path

    ref = load_image(corpus_path("aniso_vox.nii.gz")).replace(modality="MR")
    ref = ref.replace(array=np.ascontiguousarray(ref.array[6:18, 17:41, 17:41]))
    thick = degrade_image(ref, "thick-slice", 2, generator=0, profile="gaussian", thickness=2)
    return ref, thick


@pytest.fixture(scope="module")
def aniso_written(aniso_pair, tmp_path_factory):
    """``medsr upscale thick.nii.gz iso.nii.gz --through-plane --maps maps/`` (upscale_file),
    the profile told: the input and output as read, the maps and summary.json as written."""
    from medsr.api import upscale_file
    from medsr.io import save_image

    ref, thick = aniso_pair
    tmp = tmp_path_factory.mktemp("tp-bound")
    src = save_image(thick, tmp / "thick.nii.gz")
    out = upscale_file(
        src, tmp / "iso.nii.gz", through_plane=True, maps_dir=tmp / "maps",
        target_spacing=ref.spacing[0], slice_thickness=10.0, profile="gaussian", progress=False,
    )  # fmt: skip
    maps = {m: load_image(tmp / "maps" / f"{m}.nii.gz") for m in ("error_bound", "uncertainty")}
    summary = json.loads((tmp / "maps" / "summary.json").read_text())
    side = json.loads((tmp / "iso.json").read_text())
    return load_image(src), load_image(out), maps, summary, side


def test_the_bound_holds_for_most_voxels_of_a_volume_it_has_not_seen(aniso_pair, aniso_written):
    """The bound, calibrated on the input made thick once more and upscaled back by the same
    path, holds for about 90 % of the voxels of the truth (the z-uncertainty alone, read as a
    standard deviation, for a minority). It is written beside the other maps on the output's
    grid, and summary.json and the provenance say how it was calibrated."""
    ref, _ = aniso_pair
    _, sr, maps, summary, side = aniso_written
    info = summary["error_bound"]
    assert info["calibrated"] and info["coverage"] == COVERAGE and info["factor"] > 0
    assert info["calibration"]["slices"] == "3 made 6"
    assert info["calibration"]["degradation"] == "thick-slice, gaussian profile 20 mm"
    assert info["noise_sigma"]["mean"] > 0 and info["map"]["units"] == sr.units
    assert "linear interpolation" in info["spread"]
    bound, unc = maps["error_bound"], maps["uncertainty"]
    assert bound.spatial_shape == sr.spatial_shape == ref.spatial_shape
    np.testing.assert_allclose(bound.spacing, sr.spacing, rtol=1e-5)
    err = np.abs(sr.array - ref.array)
    assert 0.8 <= np.mean(err <= bound.array) <= 0.99
    assert np.mean(err <= 2 * unc.array) < 0.5
    text = side["derivation"]["summary"]  # what a DICOM output's DerivationDescription says
    assert "error bound (90% of voxels" in text
    # its uncertainty is the sagittal/coronal spread: no test-time augmentation ran (it read
    # "TTA uncertainty")
    assert "z-uncertainty (sagittal/coronal spread) mean" in text and "TTA" not in text


def test_a_rerun_gives_the_same_provenance_and_keeps_its_run_times_in_the_summary(
    aniso_pair, aniso_written, tmp_path
):
    """The same input and settings once more: byte-identical provenance and derivation in the
    sidecar (the DICOM DerivationDescription's source), as in-plane; the run times (the whole
    run, the bound's calibration) are in summary.json's ``timing_ms`` only."""
    from medsr.api import upscale_file
    from medsr.io import save_image

    ref, thick = aniso_pair
    _, _, _, summary, side = aniso_written
    upscale_file(
        save_image(thick, tmp_path / "thick.nii.gz"), tmp_path / "iso.nii.gz",
        through_plane=True, maps_dir=tmp_path / "maps", target_spacing=ref.spacing[0], slice_thickness=10.0, profile="gaussian", progress=False,
    )  # fmt: skip
    again = json.loads((tmp_path / "iso.json").read_text())
    for key in ("provenance", "derivation"):
        assert json.dumps(again[key]) == json.dumps(side[key]), key
    assert "seconds" not in json.dumps(side) and '"ms"' not in json.dumps(side)
    assert summary["timing_ms"]["total"] > 0 and summary["timing_ms"]["error_bound"] > 0
    assert "timing_ms" not in side["provenance"]["safeguards"]
    assert summary["physics"] == "thick-slice (stated)"


def test_the_bound_follows_an_affine_intensity_change(aniso_pair, aniso_written):
    """The through-plane path is equivariant to ``a·x + b`` (min–max normalised, noise and
    spread in the image's units): so is the bound, as ``a·bound``."""
    ref, _ = aniso_pair
    thick, _, maps, summary, _ = aniso_written  # the input as the file path read it
    a, b = 12.0, -3000.0
    sr2, summary2 = upscale_through_plane(
        thick.replace(array=thick.array * a + b), target_spacing=ref.spacing[0], maps=True, **TOLD
    )
    assert summary2["error_bound"]["factor"] == pytest.approx(
        summary["error_bound"]["factor"], rel=1e-3
    )
    bound, bound2 = maps["error_bound"].array, sr2.meta["maps"]["error_bound"]
    np.testing.assert_allclose(bound2, a * bound, rtol=2e-3, atol=2e-3 * a * float(bound.max()))


@pytest.fixture(scope="module")
def ct_with_fill():
    """A CT whose scan circle is filled with −3024 HU, ×2 through-plane with ``--maps``:
    ``(circle, input, output, summary)``."""
    image, circle = padded_ct(24, 24)
    sr, summary = upscale_through_plane(
        image, target_spacing=1.0, maps=True, slice_thickness=2.0, profile="box",
        progress=False, device="cpu",
    )  # fmt: skip
    return circle, image, sr, summary


def test_no_data_gets_a_bound_of_zero(ct_with_fill):
    """A CT's fill outside the scan circle is kept exact (error 0): its bound is 0, the measured
    voxels' is not, and the fill's −3024 step is no noise (nor counted in the statistics)."""
    circle, _, sr, summary = ct_with_fill
    bound = sr.meta["maps"]["error_bound"]
    pad = np.broadcast_to(~circle, bound.shape)
    assert (bound[pad] == 0).all() and (bound[~pad] > 0).all()
    info = summary["error_bound"]
    assert info["noise_sigma"]["max"] < 50  # HU: the fill's step left out
    assert info["map"]["mean"] == pytest.approx(float(bound[~pad].mean()), rel=1e-5)


def test_the_uncertainty_summary_is_over_the_voxels_that_hold_data(ct_with_fill):
    """The z-uncertainty map is 0 on the fill the output keeps exact; its summary counted those
    zeros and took its range from the output with the fill read as −1024 HU (1 330 HU, not the
    measured 613: every ``*_rel`` entry about halved). Now, as
    ``medsr interpolate --maps`` and ``medsr upscale --maps``, both are over the voxels that
    hold data and the input's range there."""
    circle, image, sr, summary = ct_with_fill
    u = sr.meta["maps"]["uncertainty"]
    pad = np.broadcast_to(~circle, u.shape)
    assert (u[pad] == 0).all()
    held = u[~pad]
    m = summary["uncertainty"]["map"]
    measured = float(np.ptp(image.array[:, circle]))
    assert m["data_range"] == pytest.approx(measured, rel=1e-5)
    assert m["mean"] == pytest.approx(float(held.mean()), rel=1e-4)
    assert m["p99"] == pytest.approx(float(np.percentile(held, 99)), rel=1e-4)
    thr = m["threshold_rel"] * measured
    assert m["frac_above"] == pytest.approx(float((held > thr).mean()), abs=1e-6)
    assert m["over"].startswith(f"the {held.size} voxels that hold data")


@pytest.mark.parametrize("over_time", [False, True], ids=["volume", "over-time"])
def test_every_statistic_is_over_the_voxels_that_hold_data_and_the_measured_range(over_time):
    """A CT whose scan circle is filled with -3024 HU, ``--through-plane --maps`` (and a CT over
    time: each time point's, ``time_points``): the consistency record counted the fill's error
    of 0 (its mean and p99 diluted by the fifth of the voxels outside the circle) and took its
    range, as the error bound's, from ``metrics.data_range_for`` (the fill read as -1024 HU:
    1 330 HU for a measured 613, every ``*_rel`` entry and threshold about doubled), while the
    uncertainty summary and every in-plane one were over the held voxels and the measured
    range. Now all three are, as in-plane's."""
    from medsr.pipeline import through_plane_error

    image, circle = padded_ct(12, 12, z=6)
    if over_time:  # a second time point of another range, the same fill
        a = image.array
        dim = np.where(a > -3000, 0.3 * a + 50, a)
        image = image.replace(array=np.stack([a, dim]).astype(np.float32), channels="time")
    sr, summary = upscale_through_plane(
        image, target_spacing=1.0, maps=True, consistency="off", slice_thickness=2.0,
        profile="box", progress=False, device="cpu",
    )  # fmt: skip
    err = np.abs(through_plane_error(image, sr))
    vols = [image.array] if not over_time else list(image.array)
    errs = [err] if not over_time else list(err)
    cons, unc, bound = summary["consistency"], summary["uncertainty"]["map"], summary["error_bound"]
    assert bound["calibrated"]
    each = (lambda r: [r]) if not over_time else (lambda r: r["time_points"])
    for vol, e, c, u, b in zip(vols, errs, each(cons), each(unc), each(bound), strict=True):
        measured = float(np.ptp(vol[:, circle]))
        held = e[:, circle]
        assert (e[:, ~circle] == 0).all()  # nothing measured there
        stats = c["error"]  # in HU first: not the range
        assert stats["mean"] == pytest.approx(float(held.mean()), rel=1e-4)
        assert stats["p99"] == pytest.approx(float(np.percentile(held, 99)), rel=1e-4)
        assert stats["data_range"] == pytest.approx(measured, rel=1e-5)
        assert stats["p99_rel"] == pytest.approx(
            float(np.percentile(held, 99)) / measured, rel=1e-4
        )
        assert stats["frac_above"] == pytest.approx(
            float((held > stats["threshold_rel"] * measured).mean()), abs=1e-6
        )
        assert c["over"] == f"the {held.size} input voxels that hold data"
        assert u["data_range"] == pytest.approx(measured, rel=1e-5)
        assert b["map"]["data_range"] == pytest.approx(measured, rel=1e-5)


def test_a_too_thin_volume_says_why_it_has_no_bound():
    """Four slices made twice as many cannot be made thick once more (2 slices one scale down):
    no bound, the summary says why, and the other maps are there; ``error_bound=False`` (the
    Python API) does not try."""
    rng = np.random.default_rng(0)
    vol = MedImage(
        rng.normal(100, 5, (4, 24, 24)).astype(np.float32), spacing=(2.0, 1.0, 1.0), modality="MR"
    )
    sr, summary = upscale_through_plane(vol, target_spacing=1.0, maps=True, **TOLD)
    assert "error_bound" not in sr.meta["maps"] and "uncertainty" in sr.meta["maps"]
    assert summary["error_bound"]["calibrated"] is False
    assert "too thin" in summary["error_bound"]["reason"]
    assert "2; at least 3 needed" in summary["error_bound"]["reason"]
    # the provenance text says so too (it said nothing of a bound)
    assert f"no error bound: {summary['error_bound']['reason']}" in sr.meta["derivation"]["summary"]
    sr, summary = upscale_through_plane(
        vol, target_spacing=1.0, maps=True, error_bound=False, **TOLD
    )
    assert "error_bound" not in summary and "consistency" in sr.meta["maps"]
