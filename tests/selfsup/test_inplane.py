"""In-plane zero-shot super-resolution: quality on a corpus image, geometry, seeds, errors."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from medsr.degradations import degrade_image
from medsr.errors import InvalidParameterError, MedSRError
from medsr.image import MedImage, affine_from_spacing
from medsr.inference.predictor import upscale
from medsr.io import load_image
from medsr.metrics import compute_metrics, data_range_for
from medsr.models import create_model
from medsr.models.weights import save_model
from medsr.selfsup import zero_shot_upscale

#: a deterministic short run (no time budget, so the result does not depend on machine load)
QUICK = {"budget_s": None, "epochs": 1, "batch_size": 4, "progress": False}


def _tiny(shape=(1, 24, 20), spacing=(3.0, 0.5, 0.7)) -> MedImage:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[: shape[1], : shape[2]]
    base = 100 * np.sin(yy / 3.0) * np.cos(xx / 4.0) + 200
    arr = np.stack([base + 5 * k + rng.normal(0, 1, base.shape) for k in range(shape[0])]).astype(
        np.float32
    )
    aff = affine_from_spacing(spacing, origin=(-12.0, 30.0, 7.5))
    aff[:3, :3] = (
        np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]) @ aff[:3, :3]
    )  # rotated
    return MedImage(
        arr, spacing=spacing, affine=aff, modality="MR", meta={"format": "nifti", "tag": 1}
    )


def test_short_run_on_a_corpus_image_beats_bicubic(corpus):
    ref = load_image(corpus("MR_small.dcm"))
    lr = degrade_image(ref, "bicubic", 2)
    dr = data_range_for(ref)
    base = compute_metrics(
        upscale(lr, 2, "bicubic", clip=False).array, ref.array, data_range=dr, crop=2
    )["psnr"]
    sr = zero_shot_upscale(lr, 2, blur_sigma=0.0, patches_per_epoch=160, **QUICK)
    psnr = compute_metrics(sr.array, ref.array, data_range=dr, crop=2)["psnr"]
    assert psnr > base + 0.2, (psnr, base)
    d = sr.meta["derivation"]
    assert (
        d["method"] == "zero-shot self-supervised" and d["scale"] == 2 and d["axes"] == "in-plane"
    )
    assert d["training"]["steps"] == 40 and d["training"]["patches"] == 160


def test_geometry_units_and_meta_of_a_volume():
    image = _tiny((3, 24, 20))
    sr = zero_shot_upscale(image, 2, patches_per_epoch=8, **QUICK)
    assert sr.spatial_shape == (3, 48, 40)
    np.testing.assert_allclose(sr.spacing, (3.0, 0.25, 0.35))
    np.testing.assert_allclose(sr.world_center(), image.world_center(), atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(sr.affine[:3, :3], axis=0), (0.35, 0.25, 3.0))
    assert (
        image.array.min() <= sr.array.min() and sr.array.max() <= image.array.max()
    )  # clipped, units kept
    assert abs(float(sr.array.mean()) - float(image.array.mean())) < 5
    assert "derivation" not in image.meta and sr.meta["tag"] == 1  # input meta untouched, copied
    assert "zero-shot" in sr.history[-1]


def test_same_seed_same_result_and_channels():
    image = _tiny((2, 16, 16))
    a = zero_shot_upscale(image, 2, patches_per_epoch=8, seed=1, **QUICK)
    b = zero_shot_upscale(image, 2, patches_per_epoch=8, seed=1, **QUICK)
    c = zero_shot_upscale(image, 2, patches_per_epoch=8, seed=2, **QUICK)
    np.testing.assert_array_equal(a.array, b.array)
    assert not np.array_equal(a.array, c.array)
    rgb = MedImage(np.stack([image.array] * 3), channels="RGB")
    out = zero_shot_upscale(rgb, 2, patches_per_epoch=4, **QUICK)
    assert out.array.shape == (3, 2, 32, 32) and out.channels == "RGB"


def test_time_budget_stops_training():
    t0 = time.perf_counter()
    sr = zero_shot_upscale(_tiny(), 2, budget_s=1.0, batch_size=2, progress=False)
    assert time.perf_counter() - t0 < 20
    assert sr.meta["derivation"]["training"]["seconds"] < 3.0


def test_fine_tunes_from_a_weights_file(tmp_path):
    torch.manual_seed(0)
    kwargs = {"scale": 2, "in_channels": 1, "num_features": 8, "num_blocks": 3}
    path = save_model(
        create_model("residual5", **kwargs),
        tmp_path / "r5.safetensors",
        {
            "architecture": "residual5",
            "kwargs": kwargs,
            "scale": 2,
            "normalization": {"kind": "minmax"},
        },
    )
    sr = zero_shot_upscale(_tiny(), 2, init=str(path), patches_per_epoch=4, **QUICK)
    assert sr.meta["derivation"]["training"]["init"] == "r5.safetensors"
    assert "fine-tuned from r5.safetensors" in sr.meta["derivation"]["model"]
    with pytest.raises(InvalidParameterError, match="×2"):
        zero_shot_upscale(_tiny(), 3, init=str(path), **QUICK)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"scale": 5}, "scale"),
        ({"budget_s": 0}, "more than 0"),
        ({"budget_s": -3}, "more than 0"),
        ({"budget_s": None, "epochs": None}, "budget"),
        ({"epochs": 0}, "epochs"),
        ({"patch_size": 0}, "patch_size"),
        ({"init": "default", "scale": 3}, "no default"),  # residual5-x2 ships; ×3 does not
        ({"init": "weights.pt"}, "safetensors"),
        ({"model": "bicubic"}, "no weights"),
        ({"model": "residual5-1d"}, "interpolator-1d"),
        ({"model": "no-such-net"}, "unknown model"),
        ({"device": "tpu"}, "device"),
    ],
)
def test_bad_parameters_raise_clear_errors(kwargs, match):
    args = {"scale": 2, "budget_s": 1.0, "progress": False, **kwargs}
    scale = args.pop("scale")
    with pytest.raises(MedSRError, match=match):
        zero_shot_upscale(_tiny(), scale, **args)


def test_too_small_or_not_an_image():
    with pytest.raises(InvalidParameterError, match="too small"):
        zero_shot_upscale(MedImage(np.ones((1, 6, 40), np.float32)), 2, budget_s=1)
    with pytest.raises(InvalidParameterError, match="MedImage"):
        zero_shot_upscale(np.zeros((8, 8)), 2, budget_s=1)


def test_no_data_is_kept_exact_and_never_trained_on():
    """A CT's fill outside the scan circle (−3024 HU): zero-shot training used to learn from it
    and the output drew values up to −1585 into it (12 % stayed exact) and pulled tissue beside
    it 1,200 HU below anything measured; now it is read as the darkest measured value and each
    fill pixel's block keeps −3024 exactly."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(1)
    h = w = 64
    arr = gaussian_filter(rng.standard_normal((h, w)), 2.0).astype(np.float32) * 800
    yy, xx = np.mgrid[:h, :w]
    circle = (yy - h / 2 + 0.5) ** 2 + (xx - w / 2 + 0.5) ** 2 < (0.45 * h) ** 2
    arr[~circle] = -3024.0
    img = MedImage(arr[None], spacing=(1.0, 1.0, 1.0), modality="CT", units="HU")
    out = zero_shot_upscale(
        img, 2, epochs=2, budget_s=None, progress=False, patches_per_epoch=16, batch_size=4, seed=0
    )
    pad = np.repeat(np.repeat(~circle, 2, 0), 2, 1)[None]
    assert (out.array[pad] == -3024.0).all()
    assert out.array[~pad].min() >= arr[circle].min() - 1e-3


def test_on_progress_reports_every_step_and_can_stop_the_training():
    """``on_progress(frac)`` before every optimiser step, rising from 0 towards 1 (how the web
    service's job shows the training move); an exception it raises stops the training."""
    fracs: list[float] = []
    sr = zero_shot_upscale(_tiny(), 2, patches_per_epoch=32, on_progress=fracs.append, **QUICK)
    steps = sr.meta["derivation"]["training"]["steps"]
    assert steps == 8 and len(fracs) == steps
    assert fracs == sorted(fracs) and fracs[0] == 0.0 and 0.8 <= fracs[-1] < 1.0

    class Stop(MedSRError):
        pass

    def stop_at_half(frac: float) -> None:
        if frac >= 0.5:
            raise Stop("cancelled")

    with pytest.raises(Stop):
        zero_shot_upscale(_tiny(), 2, patches_per_epoch=32, on_progress=stop_at_half, **QUICK)


def test_the_record_says_whether_the_run_is_reproducible():
    """A time budget makes the steps done and the learning-rate schedule (which follows the
    elapsed time) depend on the machine: two runs with the same seed differ even when they did
    the same number of steps. The training record says which runs a seed reproduces."""
    timed = zero_shot_upscale(_tiny(), 2, budget_s=0.05, batch_size=2, progress=False)
    t = timed.meta["derivation"]["training"]
    assert t["reproducible"] is False and t["budget_s"] == 0.05
    counted = zero_shot_upscale(_tiny(), 2, patches_per_epoch=4, **QUICK)
    t = counted.meta["derivation"]["training"]
    assert t["reproducible"] is True and t["budget_s"] is None


def test_each_time_point_is_normalised_and_clipped_as_on_its_own():
    """A series over time whose phases are affine copies of one another (v, 3v + 500, 0.5v − 20;
    NaN outside the field of view): each time point normalised on its own is the same network
    input, so the one network trained on all of them gives affine copies again, each clipped
    to its own range. The series' min-max normalisation put the phases at different levels of
    the network's input, and the clip to the series' range left the first phase's overshoot
    unclipped up to the bright phase's maximum."""
    yy, xx = np.mgrid[:24, :24]
    vol = (100 + 40 * np.sin(yy / 2.0) * np.cos(xx / 1.7)).astype(np.float32)
    vol[((yy - 11.5) / 11) ** 2 + ((xx - 11.5) / 11) ** 2 > 1] = np.nan
    series = np.stack([vol, 3 * vol + 500, 0.5 * vol - 20])[:, None]  # (T, Z, Y, X)
    image = MedImage(series, spacing=(2.0, 1.0, 1.0), modality="MR", channels="time")
    sr = zero_shot_upscale(image, 2, patches_per_epoch=8, **QUICK).array
    np.testing.assert_array_equal(np.isnan(sr[1]), np.isnan(sr[0]))
    np.testing.assert_allclose(sr[1], 3 * sr[0] + 500, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(sr[2], 0.5 * sr[0] - 20, rtol=1e-5, atol=1e-3)
    for t in range(3):
        inside = series[t][np.isfinite(series[t])]
        assert np.nanmax(sr[t]) <= inside.max() and np.nanmin(sr[t]) >= inside.min()
