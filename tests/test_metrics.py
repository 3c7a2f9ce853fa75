"""medsr.metrics cross-checked against scikit-image (and torchmetrics) on random and natural images."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.signal import convolve2d
from skimage import data as skdata
from skimage import metrics as skm
from skimage.transform import resize

from medsr import metrics as M
from medsr.errors import InvalidParameterError
from medsr.image import MedImage

SSIM_KW = {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False}
TOL = 1e-4  # requested tolerance; the implementations actually agree to ~1e-12


def sk_ssim(ref, pred, data_range, **kw):
    return skm.structural_similarity(ref, pred, data_range=data_range, **SSIM_KW, **kw)


@pytest.fixture(scope="module")
def camera() -> np.ndarray:
    return skdata.camera().astype(np.float64)


@pytest.fixture(scope="module")
def camera_small(camera) -> np.ndarray:
    """128×128 camera (0..255), fast enough for per-slice loops."""
    return resize(camera, (128, 128), anti_aliasing=True, preserve_range=True)


def _pairs(camera_small):
    """(ref, pred, data_range) on random and natural images, 0..255 and HU-like −1000..2000."""
    rng = np.random.default_rng(0)
    rand = rng.uniform(0, 255, (3, 40, 48))
    cam = np.stack([camera_small, np.flipud(camera_small)])
    hu = cam / 255.0 * 3000.0 - 1000.0
    out = []
    for ref, dr, sd in ((rand, 255.0, 20.0), (cam, 255.0, 8.0), (hu, 3000.0, 60.0)):
        pred = ref + rng.normal(0, sd, ref.shape) + 0.02 * dr * np.sin(np.arange(ref.shape[-1]))
        out.append((ref, pred, dr))
    return out


@pytest.fixture(scope="module")
def pairs(camera_small):
    return _pairs(camera_small)


# ---------------------------------------------------------------------------------------------
# pixel-wise metrics against scikit-image
# ---------------------------------------------------------------------------------------------
def test_psnr_matches_skimage(pairs):
    for ref, pred, dr in pairs:
        per_slice = M.psnr2d(pred, ref, dr)
        assert per_slice.shape == (ref.shape[0],)
        expected = [
            skm.peak_signal_noise_ratio(r, p, data_range=dr) for r, p in zip(ref, pred, strict=True)
        ]
        np.testing.assert_allclose(per_slice, expected, rtol=TOL)
        whole = M.psnr3d(pred, ref, dr)
        assert isinstance(whole, float)
        assert whole == pytest.approx(
            skm.peak_signal_noise_ratio(ref, pred, data_range=dr), rel=TOL
        )


def test_mse_mae_match_skimage_and_numpy(pairs):
    for ref, pred, _ in pairs:
        np.testing.assert_allclose(
            M.mse2d(pred, ref),
            [skm.mean_squared_error(r, p) for r, p in zip(ref, pred, strict=True)],
            rtol=TOL,
        )
        assert M.mse3d(pred, ref) == pytest.approx(skm.mean_squared_error(ref, pred), rel=TOL)
        np.testing.assert_allclose(
            M.mae2d(pred, ref), np.abs(pred - ref).mean(axis=(1, 2)), rtol=TOL
        )
        assert M.mae3d(pred, ref) == pytest.approx(np.abs(pred - ref).mean(), rel=TOL)


@pytest.mark.parametrize("normalization", ["euclidean", "min-max", "mean"])
def test_nrmse_matches_skimage(pairs, normalization):
    for ref, pred, _ in pairs:
        # scikit-image takes the reference first; we take the prediction first.
        expected = [
            skm.normalized_root_mse(r, p, normalization=normalization)
            for r, p in zip(ref, pred, strict=True)
        ]
        np.testing.assert_allclose(
            M.nrmse2d(pred, ref, normalization=normalization), expected, rtol=TOL
        )
        assert M.nrmse3d(pred, ref, normalization=normalization) == pytest.approx(
            skm.normalized_root_mse(ref, pred, normalization=normalization), rel=TOL
        )


def test_nrmse_default_is_euclidean(pairs):
    ref, pred, _ = pairs[2]
    assert M.nrmse3d(pred, ref) == pytest.approx(skm.normalized_root_mse(ref, pred), rel=TOL)
    with pytest.raises(InvalidParameterError):
        M.nrmse3d(pred, ref, normalization="max")


# ---------------------------------------------------------------------------------------------
# SSIM against scikit-image and torchmetrics
# ---------------------------------------------------------------------------------------------
def test_ssim2d_matches_skimage(pairs):
    for ref, pred, dr in pairs:
        expected = [sk_ssim(r, p, dr) for r, p in zip(ref, pred, strict=True)]
        np.testing.assert_allclose(M.ssim2d(pred, ref, dr), expected, atol=TOL)


def test_ssim2d_full_camera_both_ranges(camera):
    rng = np.random.default_rng(1)
    noisy = camera + rng.normal(0, 10, camera.shape)
    assert M.ssim2d(noisy, camera, 255.0)[0] == pytest.approx(
        sk_ssim(camera, noisy, 255.0), abs=TOL
    )
    hu, hu_noisy = camera / 255 * 3000 - 1000, noisy / 255 * 3000 - 1000
    got = M.ssim2d(hu_noisy, hu, 3000.0)[0]
    assert got == pytest.approx(sk_ssim(hu, hu_noisy, 3000.0), abs=TOL)


def test_ssim_map_matches_skimage_full_map(camera_small):
    rng = np.random.default_rng(2)
    pred = camera_small + rng.normal(0, 15, camera_small.shape)
    _, full = skm.structural_similarity(camera_small, pred, data_range=255.0, full=True, **SSIM_KW)
    ours = M.ssim_map2d(pred, camera_small, 255.0)
    assert ours.shape == (1, 128, 128)
    np.testing.assert_allclose(ours[0], full, atol=TOL)


def test_ssim_agrees_with_torchmetrics_inside_valid_region(camera_small):
    """torchmetrics' SSIM *map* is the same; its score also averages the padded border."""
    torch = pytest.importorskip("torch")
    tmf = pytest.importorskip("torchmetrics.functional.image")
    rng = np.random.default_rng(3)
    pred = camera_small + rng.normal(0, 15, camera_small.shape)
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))[None, None]  # noqa: E731
    score, tmap = tmf.structural_similarity_index_measure(
        t(pred), t(camera_small), data_range=255.0, return_full_image=True
    )
    tmap = tmap[0, 0].numpy()
    ours = M.ssim_map2d(pred, camera_small, 255.0)[0]
    np.testing.assert_allclose(ours[5:-5, 5:-5], tmap[5:-5, 5:-5], atol=1e-9)
    assert M.ssim2d(pred, camera_small, 255.0)[0] == pytest.approx(
        tmap[5:-5, 5:-5].mean(), abs=1e-9
    )
    # documented deviation: torchmetrics' score includes the 5-px reflect-padded border
    assert abs(float(score) - tmap[5:-5, 5:-5].mean()) > 1e-5


def test_ssim3d_matches_skimage_3d():
    rng = np.random.default_rng(4)
    ref = ndimage_smooth(rng.uniform(-1000, 2000, (24, 30, 34)))
    pred = ref + rng.normal(0, 80, ref.shape)
    expected = sk_ssim(ref, pred, 3000.0)
    assert M.ssim3d(pred, ref, 3000.0) == pytest.approx(expected, abs=TOL)
    # more slices than one chunk holds: chunking along z is exact
    old = M._CHUNK_ELEMENTS
    try:
        M._CHUNK_ELEMENTS = 30 * 34 * 4
        assert M.ssim3d(pred, ref, 3000.0) == pytest.approx(expected, abs=1e-12)
        np.testing.assert_allclose(
            M.ssim2d(pred, ref, 3000.0),
            [sk_ssim(r, p, 3000.0) for r, p in zip(ref, pred, strict=True)],
            atol=TOL,
        )
    finally:
        M._CHUNK_ELEMENTS = old


def ndimage_smooth(a):
    from scipy import ndimage

    return ndimage.gaussian_filter(a, 1.0)


def test_ssim3d_few_slices_falls_back_to_pooled_2d(pairs):
    ref, pred, dr = pairs[0]  # 3 slices
    with pytest.warns(UserWarning, match="fewer than the 11-slice"):
        got = M.ssim3d(pred, ref, dr)
    # pooled 2-D maps over equal-size slices = mean of per-slice SSIM
    assert got == pytest.approx(M.ssim2d(pred, ref, dr).mean(), abs=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a single 2-D image does not warn
        assert M.ssim3d(pred[0], ref[0], dr) == pytest.approx(sk_ssim(ref[0], pred[0], dr), abs=TOL)


def test_colour_is_averaged_over_channels_like_skimage(camera_small):
    rng = np.random.default_rng(5)
    ref = np.stack([camera_small, camera_small[::-1], camera_small[:, ::-1]])[:, None]  # (3,1,Y,X)
    pred = ref + rng.normal(0, 10, ref.shape)
    expected_ssim = sk_ssim(ref[:, 0], pred[:, 0], 255.0, channel_axis=0)
    assert M.ssim2d(pred, ref, 255.0)[0] == pytest.approx(expected_ssim, abs=TOL)
    assert M.psnr3d(pred, ref, 255.0) == pytest.approx(
        skm.peak_signal_noise_ratio(ref, pred, data_range=255.0), rel=TOL
    )
    img_ref = MedImage(ref.astype(np.float32), channels="RGB")
    img_pred = MedImage(pred.astype(np.float32), channels="RGB")
    assert M.mse3d(img_pred, img_ref) == pytest.approx(
        skm.mean_squared_error(img_ref.array.astype(float), img_pred.array.astype(float)), rel=TOL
    )


def test_ssim_too_small_image_raises():
    a = np.zeros((2, 10, 40))
    with pytest.raises(InvalidParameterError, match="at least 11"):
        M.ssim2d(a, a, 1.0)
    with pytest.raises(InvalidParameterError, match="at least 11"):
        M.ssim2d(np.zeros((1, 20, 20)), np.zeros((1, 20, 20)), 1.0, crop=5)


# ---------------------------------------------------------------------------------------------
# MS-SSIM
# ---------------------------------------------------------------------------------------------
def numpy_ms_ssim(x, y, data_range, betas=M.MS_SSIM_BETAS):
    """Independent MS-SSIM after Wang's msssim.m: 'valid' 2-D filtering, 2×2 block means."""
    g1 = np.exp(-(np.arange(-5, 6) ** 2) / (2 * 1.5**2))
    win = np.outer(g1, g1) / np.outer(g1, g1).sum()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    values = []
    for level in range(len(betas)):
        f = lambda a: convolve2d(a, win, mode="valid")  # noqa: E731
        mx, my = f(x), f(y)
        sxx, syy, sxy = f(x * x) - mx**2, f(y * y) - my**2, f(x * y) - mx * my
        cs = (2 * sxy + c2) / (sxx + syy + c2)
        lum = (2 * mx * my + c1) / (mx**2 + my**2 + c1)
        values.append(max(0.0, (lum * cs).mean() if level == len(betas) - 1 else cs.mean()))
        h, w = x.shape[0] // 2 * 2, x.shape[1] // 2 * 2
        x = x[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
        y = y[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
    return float(np.prod(np.power(values, betas)))


@pytest.fixture(scope="module")
def camera_192(camera) -> np.ndarray:
    return resize(camera, (192, 200), anti_aliasing=True, preserve_range=True)


def test_ms_ssim_identical_is_one(camera_192):
    assert M.ms_ssim2d(camera_192, camera_192, 255.0)[0] == pytest.approx(1.0, abs=1e-12)


def test_ms_ssim_decreases_with_noise_and_matches_numpy_reference(camera_192):
    rng = np.random.default_rng(6)
    noise = rng.standard_normal(camera_192.shape)
    values = []
    for sd in (2.0, 8.0, 25.0, 60.0):
        pred = camera_192 + sd * noise
        got = M.ms_ssim2d(pred, camera_192, 255.0)[0]
        assert got == pytest.approx(numpy_ms_ssim(pred, camera_192, 255.0), abs=1e-9)
        values.append(got)
    assert all(a > b for a, b in itertools.pairwise(values))
    hu, hu_pred = camera_192 / 255 * 3000 - 1000, (camera_192 + 8 * noise) / 255 * 3000 - 1000
    assert M.ms_ssim2d(hu_pred, hu, 3000.0)[0] == pytest.approx(
        numpy_ms_ssim(hu_pred, hu, 3000.0), abs=1e-9
    )


def test_ms_ssim_close_to_torchmetrics(camera_192):
    """torchmetrics averages the last scale's SSIM over its padded border: small, documented gap."""
    torch = pytest.importorskip("torch")
    tmf = pytest.importorskip("torchmetrics.functional.image")
    rng = np.random.default_rng(7)
    pred = camera_192 + rng.normal(0, 10, camera_192.shape)
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))[None, None]  # noqa: E731
    theirs = float(
        tmf.multiscale_structural_similarity_index_measure(t(pred), t(camera_192), data_range=255.0)
    )
    assert M.ms_ssim2d(pred, camera_192, 255.0)[0] == pytest.approx(theirs, abs=5e-3)


def test_ms_ssim_size_mask_and_betas(camera_small):
    rng = np.random.default_rng(8)
    pred = camera_small + rng.normal(0, 10, camera_small.shape)
    with pytest.raises(InvalidParameterError, match="at least 176"):
        M.ms_ssim2d(pred, camera_small, 255.0)
    with pytest.raises(InvalidParameterError, match="no masked form"):
        M.ms_ssim2d(pred, camera_small, 255.0, mask=np.ones((128, 128), bool))
    betas = (0.2, 0.3, 0.5)  # 3 scales need 44 px
    assert M.ms_ssim2d(pred, camera_small, 255.0, betas=betas)[0] == pytest.approx(
        numpy_ms_ssim(pred, camera_small, 255.0, betas), abs=1e-9
    )
    # a single scale is plain SSIM
    assert M.ms_ssim2d(pred, camera_small, 255.0, betas=(1.0,))[0] == pytest.approx(
        M.ssim2d(pred, camera_small, 255.0)[0], abs=1e-12
    )


# ---------------------------------------------------------------------------------------------
# 2-D vs 3-D, masks, crop
# ---------------------------------------------------------------------------------------------
def test_psnr3d_is_psnr_of_concatenated_volume_and_differs_from_mean_2d():
    rng = np.random.default_rng(9)
    ref = rng.uniform(0, 100, (4, 20, 24))
    pred = ref + rng.normal(0, 1, ref.shape) * np.array([0.5, 1, 4, 10])[:, None, None]
    tall = ref.reshape(-1, 24), pred.reshape(-1, 24)
    assert M.psnr3d(pred, ref, 100.0) == pytest.approx(
        skm.peak_signal_noise_ratio(*tall, data_range=100.0), rel=1e-12
    )
    assert abs(M.psnr2d(pred, ref, 100.0).mean() - M.psnr3d(pred, ref, 100.0)) > 0.5
    # MSE and MAE are linear: the mean over equal slices is the volume value
    assert M.mse2d(pred, ref).mean() == pytest.approx(M.mse3d(pred, ref), rel=1e-12)


def test_full_mask_equals_no_mask(pairs):
    for ref, pred, dr in pairs:
        full = np.ones(ref.shape, bool)
        for f in (M.psnr2d, M.ssim2d):
            np.testing.assert_allclose(f(pred, ref, dr, mask=full), f(pred, ref, dr), rtol=1e-12)
        for f in (M.mse2d, M.mae2d, M.nrmse2d):
            np.testing.assert_allclose(f(pred, ref, mask=full), f(pred, ref), rtol=1e-12)
        for f in (M.psnr3d, M.ssim3d):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                assert f(pred, ref, dr, mask=full) == pytest.approx(f(pred, ref, dr), rel=1e-12)
        for f in (M.mse3d, M.mae3d, M.nrmse3d):
            assert f(pred, ref, mask=full) == pytest.approx(f(pred, ref), rel=1e-12)
        assert M.compute_metrics(pred, ref, data_range=dr, mask=full)["psnr"] == pytest.approx(
            M.compute_metrics(pred, ref, data_range=dr)["psnr"], rel=1e-12
        )


def test_mask_selects_pixels(pairs):
    ref, pred, dr = pairs[2]
    mask = np.zeros(ref.shape, bool)
    mask[:, 30:100, 20:90] = True
    mask[1, 40:60, :] = True
    assert M.psnr3d(pred, ref, dr, mask=mask) == pytest.approx(
        skm.peak_signal_noise_ratio(ref[mask], pred[mask], data_range=dr), rel=TOL
    )
    assert M.nrmse3d(pred, ref, mask=mask, normalization="min-max") == pytest.approx(
        skm.normalized_root_mse(ref[mask], pred[mask], normalization="min-max"), rel=TOL
    )
    np.testing.assert_allclose(
        M.mae2d(pred, ref, mask=mask),
        [np.abs(p[m] - r[m]).mean() for r, p, m in zip(ref, pred, mask, strict=True)],
    )
    # SSIM with a mask: mean of the full SSIM map over mask ∩ valid region
    expected = []
    for r, p, m in zip(ref, pred, mask, strict=True):
        _, smap = skm.structural_similarity(r, p, data_range=dr, full=True, **SSIM_KW)
        expected.append(smap[5:-5, 5:-5][m[5:-5, 5:-5]].mean())
    np.testing.assert_allclose(M.ssim2d(pred, ref, dr, mask=mask), expected, atol=TOL)
    # a 2-D mask applies to every slice
    np.testing.assert_allclose(
        M.mse2d(pred, ref, mask=mask[0]),
        M.mse2d(pred, ref, mask=np.broadcast_to(mask[0], ref.shape)),
    )


def test_empty_mask_slices_are_nan_and_empty_volume_mask_raises(pairs):
    ref, pred, dr = pairs[0]
    mask = np.zeros(ref.shape, bool)
    mask[1, 10:30, 10:30] = True
    psnr = M.psnr2d(pred, ref, dr, mask=mask)
    assert np.isnan(psnr[0]) and np.isnan(psnr[2]) and np.isfinite(psnr[1])
    assert np.isnan(M.ssim2d(pred, ref, dr, mask=mask)[0])
    res = M.compute_metrics(pred, ref, data_range=dr, mask=mask)
    assert res["psnr"] == pytest.approx(psnr[1])
    assert math.isnan(res["ms_ssim"])
    empty = np.zeros(ref.shape, bool)
    for call in (
        lambda: M.psnr3d(pred, ref, dr, mask=empty),
        lambda: M.mse3d(pred, ref, mask=empty),
        lambda: M.ssim3d(pred[0], ref[0], dr, mask=empty[0]),
        lambda: M.compute_metrics(pred, ref, data_range=dr, mask=empty),
        lambda: M.compute_metrics(pred, ref, data_range=dr, mask=empty, per="volume"),
    ):
        with pytest.raises(InvalidParameterError, match="mask"):
            call()


def test_crop_ignores_errors_confined_to_the_border(pairs):
    ref, pred, dr = pairs[1]
    c = 4
    spoiled = pred.copy()
    spoiled[:, :c] += 500
    spoiled[:, :, -c:] -= 500
    for f in (M.psnr2d, M.ssim2d):
        np.testing.assert_array_equal(f(spoiled, ref, dr, crop=c), f(pred, ref, dr, crop=c))
        assert not np.allclose(f(spoiled, ref, dr), f(pred, ref, dr))
    for f in (M.mse3d, M.mae3d, M.nrmse3d):
        assert f(spoiled, ref, crop=c) == f(pred, ref, crop=c)
    spoiled_all = M.compute_metrics(spoiled, ref, data_range=dr, crop=c)
    clean_all = M.compute_metrics(pred, ref, data_range=dr, crop=c)
    np.testing.assert_array_equal(list(spoiled_all.values()), list(clean_all.values()))
    # crop = computing on the sliced arrays (in-plane only; slices are kept)
    sl = (slice(None), slice(c, -c), slice(c, -c))
    np.testing.assert_allclose(M.ssim2d(pred, ref, dr, crop=c), M.ssim2d(pred[sl], ref[sl], dr))
    assert M.psnr3d(pred, ref, dr, crop=c) == M.psnr3d(pred[sl], ref[sl], dr)


# ---------------------------------------------------------------------------------------------
# data_range and argument checking
# ---------------------------------------------------------------------------------------------
def test_data_range_is_required():
    a = np.zeros((16, 16))
    for f in (M.psnr2d, M.psnr3d, M.ssim2d, M.ssim3d, M.ms_ssim2d):
        with pytest.raises(TypeError):
            f(a, a)
        for bad in (None, 0, -1.0, float("nan"), float("inf"), "255", True):
            with pytest.raises(InvalidParameterError, match="data_range"):
                f(a, a, bad)
    with pytest.raises(TypeError):
        M.compute_metrics(a, a)
    with pytest.raises(InvalidParameterError, match="data_range"):
        M.compute_metrics(a, a, data_range=None)


def test_identical_images_give_inf_psnr_without_warning(camera_small):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert M.psnr3d(camera_small, camera_small, 255.0) == math.inf
        assert np.all(M.psnr2d(camera_small, camera_small, 255.0) == math.inf)
        assert M.ssim2d(camera_small, camera_small, 255.0)[0] == pytest.approx(1.0)
        assert M.mse3d(camera_small, camera_small) == 0.0
        assert math.isnan(M.nrmse3d(np.zeros((4, 4)), np.zeros((4, 4))))
        assert M.nrmse3d(np.ones((4, 4)), np.zeros((4, 4))) == math.inf


def test_bad_inputs_raise_clear_errors():
    a = np.zeros((2, 16, 16))
    with pytest.raises(InvalidParameterError, match="same grid"):
        M.mse3d(a, np.zeros((2, 16, 17)))
    with pytest.raises(InvalidParameterError, match="NaN"):
        M.mse3d(np.full((16, 16), np.nan), np.zeros((16, 16)))
    with pytest.raises(InvalidParameterError, match="shape"):
        M.mse3d(np.zeros((1, 1, 2, 16, 16)), np.zeros((1, 1, 2, 16, 16)))
    with pytest.raises(InvalidParameterError, match="crop"):
        M.mse3d(a, a, crop=8)
    with pytest.raises(InvalidParameterError, match="crop"):
        M.mse3d(a, a, crop=-1)
    with pytest.raises(InvalidParameterError, match="mask shape"):
        M.mse3d(a, a, mask=np.ones((3, 16, 16), bool))
    with pytest.raises(InvalidParameterError, match="per"):
        M.compute_metrics(a, a, data_range=1.0, per="image")


def test_integer_inputs_do_not_wrap_around():
    a = np.array([[10, 200]], dtype=np.uint8)
    b = np.array([[20, 100]], dtype=np.uint8)
    assert M.mse3d(a, b) == pytest.approx((100 + 10000) / 2)
    assert M.mae3d(a, b) == pytest.approx(55.0)


def test_2d_input_gives_one_value():
    rng = np.random.default_rng(10)
    ref = rng.uniform(0, 1, (20, 22))
    pred = ref + 0.1
    assert M.psnr2d(pred, ref, 1.0).shape == (1,)
    assert M.psnr2d(pred, ref, 1.0)[0] == pytest.approx(M.psnr3d(pred, ref, 1.0))


# ---------------------------------------------------------------------------------------------
# properties
# ---------------------------------------------------------------------------------------------
_img = arrays(
    np.float64,
    (2, 12, 13),
    elements=st.floats(-1000, 1000, allow_nan=False, allow_subnormal=False),
)


@settings(max_examples=40, deadline=None)
@given(_img, _img)
def test_properties(a, b):
    dr = 2000.0
    assert M.mse3d(a, b) >= 0
    assert M.mse3d(a, b) == pytest.approx(M.mse3d(b, a))
    assert M.psnr3d(a, b, dr) == pytest.approx(M.psnr3d(b, a, dr))
    assert M.mae3d(a, b) <= math.sqrt(M.mse3d(a, b)) * (1 + 1e-12) + 1e-12
    s_ab, s_ba = M.ssim2d(a, b, dr), M.ssim2d(b, a, dr)
    np.testing.assert_allclose(s_ab, s_ba, atol=1e-12)
    assert np.all(s_ab <= 1 + 1e-12) and np.all(s_ab >= -1 - 1e-12)
    np.testing.assert_allclose(M.ssim2d(a, a, dr), 1.0, atol=1e-9)
    assert M.psnr3d(a, a, dr) == math.inf


# ---------------------------------------------------------------------------------------------
# data_range_for, body_mask
# ---------------------------------------------------------------------------------------------
def test_data_range_for():
    ref = np.array([[-3024.0, -1000.0], [40.0, 1500.0]])
    assert M.data_range_for(ref) == 4524.0
    assert M.data_range_for(ref, "CT") == 2524.0  # padding below −1024 HU ignored
    assert M.data_range_for(MedImage(ref, modality="CT")) == 2524.0
    assert M.data_range_for(MedImage(ref, modality="CT"), modality="OT") == 4524.0
    assert M.data_range_for(np.array([[0.0, 255.0]])) == 255.0
    with pytest.raises(InvalidParameterError, match="constant"):
        M.data_range_for(np.full((4, 4), 7.0))


def _disk(shape, center, radius):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= radius**2


def test_body_mask_ct_fills_lungs_and_drops_table():
    shape = (64, 64)
    body = _disk(shape, (28, 32), 20)
    lungs = _disk(shape, (26, 24), 6) | _disk(shape, (26, 40), 6)
    img = np.full(shape, -1000.0)
    img[body] = 40.0
    img[lungs] = -850.0
    img[58:61, 5:59] = 200.0  # table, separate from the body
    img[-3:, :] = -3024.0  # padding outside the FOV
    vol = np.stack([img, img, img])
    mask = M.body_mask(vol, "CT")
    assert mask.shape == vol.shape and mask.dtype == bool
    np.testing.assert_array_equal(mask[1], body)
    assert M.body_mask(img, "CT").shape == shape  # 2-D in, 2-D out
    np.testing.assert_array_equal(M.body_mask(MedImage(vol, modality="CT")), mask)
    assert not M.body_mask(np.full((2, 16, 16), -1000.0), "CT").any()


def test_body_mask_mr_us_and_others():
    rng = np.random.default_rng(11)
    shape = (64, 64)
    head = _disk(shape, (32, 32), 22)
    mr = np.abs(rng.normal(0, 5, shape))
    mr[head] = 300 + rng.normal(0, 10, head.sum())
    mr[_disk(shape, (32, 32), 5)] = 20.0  # dark ventricle inside: filled
    np.testing.assert_array_equal(M.body_mask(mr, "MR"), head)

    sector = _disk(shape, (0, 32), 50) & (np.abs(np.mgrid[:64, :64][1] - 32) < 25)
    us = np.where(sector, 100.0, 0.0)
    us[_disk(shape, (25, 32), 4)] = 0.0  # anechoic cyst: filled
    us[60:63, 60:63] = 255.0  # text overlay outside the sector: dropped
    np.testing.assert_array_equal(M.body_mask(us, "US"), sector)

    assert M.body_mask(mr, "DX").all() and M.body_mask(mr).all()


# ---------------------------------------------------------------------------------------------
# compute_metrics
# ---------------------------------------------------------------------------------------------
def test_compute_metrics_per_slice_and_volume(pairs, camera_192):
    ref, pred, dr = pairs[1]
    res = M.compute_metrics(pred, ref, data_range=dr, crop=2)
    assert list(res) == ["psnr", "ssim", "ms_ssim", "mse", "mae", "nrmse"]
    assert all(isinstance(v, float) for v in res.values())
    assert res["psnr"] == pytest.approx(M.psnr2d(pred, ref, dr, crop=2).mean())
    assert res["ssim"] == pytest.approx(M.ssim2d(pred, ref, dr, crop=2).mean())
    assert res["nrmse"] == pytest.approx(M.nrmse2d(pred, ref, crop=2).mean())
    assert math.isnan(res["ms_ssim"])  # 124 px < 176 px

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        vol = M.compute_metrics(pred, ref, data_range=dr, per="volume")
        assert vol["ssim"] == pytest.approx(M.ssim3d(pred, ref, dr))
    assert vol["psnr"] == pytest.approx(M.psnr3d(pred, ref, dr))
    assert vol["mae"] == pytest.approx(M.mae3d(pred, ref))
    assert math.isnan(vol["ms_ssim"])

    big_pred = MedImage((camera_192 + 5.0).astype(np.float32))
    big = M.compute_metrics(big_pred, MedImage(camera_192.astype(np.float32)), data_range=255.0)
    assert 0.9 < big["ms_ssim"] <= 1.0
    assert big["mae"] == pytest.approx(5.0, rel=1e-5)


# ---------------------------------------------------------------------------------------------
# low-band and high-band error
# ---------------------------------------------------------------------------------------------
def test_band_rms2d_splits_the_error_as_defined(camera_small):
    """Per slice: the error zeroed where not scored (mask, border), Gaussian low-pass σ px in-plane
    (reflected edges), RMS of the low-pass and of the rest over the scored pixels — written out
    here with scipy directly, as benchmarks/faithful.py computed it before it used this."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0)
    ref = np.stack([camera_small, camera_small[::-1]])
    err = rng.normal(0, 3, ref.shape) + np.linspace(-4, 4, 128)[None, None, :]  # noise + a ramp
    pred = ref + err
    mask = np.ones(ref.shape, bool)
    mask[0, :, :40] = False  # slice 0: a third not scored (padding)
    low, high = M.band_rms2d(pred, ref, sigma=M.band_sigma(2), crop=2, mask=mask)
    assert M.band_sigma(2) == 4.0 and low.shape == high.shape == (2,)
    for k in range(2):
        keep = mask[k].copy()
        keep[:2], keep[-2:], keep[:, :2], keep[:, -2:] = False, False, False, False
        e = np.where(keep, err[k], 0.0)
        lo = gaussian_filter(e, 4.0, mode="reflect")
        assert low[k] == pytest.approx(np.sqrt(np.mean(lo[keep] ** 2)), rel=1e-12)
        assert high[k] == pytest.approx(np.sqrt(np.mean((e - lo)[keep] ** 2)), rel=1e-12)
    # the ramp is low band, the white noise high band
    assert low[1] > 2.0 and 2.5 < high[1] < 3.2
    # a brightness shift is all low band
    lo, hi = M.band_rms2d(camera_small + 7.0, camera_small, sigma=4.0)
    assert lo[0] == pytest.approx(7.0) and hi[0] == pytest.approx(0.0, abs=1e-9)


def test_band_rms2d_masks_images_and_bad_arguments(camera_small):
    ref = MedImage(np.stack([camera_small] * 2).astype(np.float32))
    mask = np.ones((2, 128, 128), bool)
    mask[1] = False
    low, high = M.band_rms2d(ref.replace(array=ref.array + 1), ref, sigma=4.0, mask=mask)
    assert low[0] == pytest.approx(1.0) and np.isnan(low[1]) and np.isnan(high[1])
    for bad in (0, -1.0, float("nan"), None, True, "4"):
        with pytest.raises(InvalidParameterError, match="sigma"):
            M.band_rms2d(camera_small, camera_small, sigma=bad)
    with pytest.raises(InvalidParameterError, match="same grid"):
        M.band_rms2d(camera_small[:64], camera_small, sigma=4.0)
    with pytest.raises(InvalidParameterError, match="scale"):
        M.band_sigma(0)
