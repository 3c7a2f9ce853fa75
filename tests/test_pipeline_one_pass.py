"""One model pass serves every purpose: detail scaling, the consistency reference, the
self-check; the shortcuts give what the separate computations gave."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import medsr
from medsr.image import MedImage
from medsr.inference.planes import PlaneUpscaler
from medsr.pipeline import _shrink_detail, upscale_with_safeguards
from tests.conftest import corpus_path
from tests.safeguards.conftest import make_weights

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _padded_ct() -> MedImage:
    """Two CT slices (the corpus' 128² CT) with a fill of −2000 HU outside a circle: padding."""
    ct = medsr.load_image(corpus_path("CT_small.dcm"))
    arr = np.repeat(ct.array, 2, axis=0)
    arr[1] = np.roll(arr[1], 3, axis=0)
    yy, xx = np.mgrid[:128, :128]
    arr[:, (yy - 63.5) ** 2 + (xx - 63.5) ** 2 > 60**2] = -2000.0
    return ct.replace(array=arr, meta={})


def test_kept_base_is_the_base_interpolator_output():
    image = _padded_ct()
    up = PlaneUpscaler("fast-x2", 2)
    job = up.run_job(up.prepare(image, keep_base=True))
    span = float(np.ptp(image.array))
    raw = PlaneUpscaler("bicubic", 2, clip=False).upscale(image).array
    clipped = PlaneUpscaler("bicubic", 2).upscale(image).array
    np.testing.assert_allclose(up.base_array(job, clip=False), raw, atol=1e-6 * span)
    np.testing.assert_allclose(up.base_array(job, clip=True), clipped, atol=1e-6 * span)
    assert np.array_equal(up.finish(job).array, up.upscale(image).array)  # keeping changes nothing


def test_detail_gain_in_the_pass_equals_scaling_afterwards():
    image = _padded_ct()
    up = PlaneUpscaler("default-x2", 2)
    plain = up.upscale(image)
    scaled = up.upscale(image, detail_gain=0.3)
    after = _shrink_detail(image, plain, up, 0.3)
    np.testing.assert_allclose(scaled.array, after.array, atol=1e-6 * float(np.ptp(image.array)))
    outside = np.repeat(np.repeat(image.array < -1500, 2, -2), 2, -1)
    assert np.all(scaled.array[outside] == -2000.0)  # padding stays exact
    assert (
        scaled.meta["derivation"]["detail_gain"] == 0.3 == after.meta["derivation"]["detail_gain"]
    )
    assert scaled.history == after.history
    # the scaled detail added to another interpolator (the self-check's peer): same both ways,
    # and with no detail left it *is* that interpolator
    over = up.upscale(image, detail_gain=0.3, detail_over="lanczos")
    after = _shrink_detail(image, plain, up, 0.3, "lanczos")
    np.testing.assert_allclose(over.array, after.array, atol=1e-5 * float(np.ptp(image.array)))
    assert (
        over.meta["derivation"]["detail_over"]
        == "lanczos"
        == after.meta["derivation"]["detail_over"]
    )
    assert np.all(over.array[outside] == -2000.0)
    nothing = up.upscale(image, detail_gain=0.0, detail_over="lanczos")
    lanczos = PlaneUpscaler("lanczos", 2).upscale(image)
    np.testing.assert_allclose(nothing.array, lanczos.array, atol=1e-5 * float(np.ptp(image.array)))


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
    return make_weights(tmp_path_factory.mktemp("w") / "random.safetensors")


def test_self_check_scaling_same_as_on_a_precomputed_output(random_weights):
    """A random network's detail fails the self-check: scaled as the planes come back (one
    pass) or afterwards (a batch's precomputed output) gives the same image and record."""
    yy, xx = np.mgrid[:96, :96]
    smooth = (100 + 50 * np.sin(xx / 25.0) * np.cos(yy / 31.0)).astype(np.float32)[None]
    img = MedImage(np.concatenate([smooth, smooth[:, ::-1]]), modality="MR")
    kw = {"maps": False, "tta": False, "ood": False, "warn": False}
    sr, summary = upscale_with_safeguards(img, 2, str(random_weights), **kw)
    assert summary["self_check"]["applied"] and summary["self_check"]["over"] == "lanczos"
    assert 0.0 <= summary["self_check"]["gain"] <= 1.0
    out = medsr.upscale(img, 2, str(random_weights))
    sr2, summary2 = upscale_with_safeguards(img, 2, str(random_weights), output=out, **kw)
    np.testing.assert_allclose(sr.array, sr2.array, atol=1e-6 * float(np.ptp(img.array)))
    assert summary["self_check"] == summary2["self_check"]
    assert sr.meta["derivation"]["detail_gain"] == sr2.meta["derivation"]["detail_gain"]
    # with the uncertainty map (TTA) the output is the same again
    sr3, _ = upscale_with_safeguards(img, 2, str(random_weights), **{**kw, "tta": True})
    np.testing.assert_allclose(sr.array, sr3.array, atol=1e-6 * float(np.ptp(img.array)))


def test_consistency_reference_from_the_kept_base(monkeypatch):
    """Speckle: the error exceeds the absolute threshold, so the bicubic reference is needed;
    the kept base and a fresh bicubic upscale give the same reference."""
    import medsr.pipeline as pipeline

    rng = np.random.default_rng(3)
    img = MedImage(rng.gamma(1.0, 100.0, (2, 64, 64)).astype(np.float32), modality="US")
    kw = {"maps": False, "tta": False, "warn": False, "self_check": False}
    _, kept = upscale_with_safeguards(img, 2, "fast-x2", **kw)
    monkeypatch.setattr(pipeline, "KEEP_BASE_BYTES", 0)
    _, fresh = upscale_with_safeguards(img, 2, "fast-x2", **kw)
    assert "bicubic_p99_rel" in kept["consistency"]
    assert kept["consistency"]["bicubic_p99_rel"] == pytest.approx(
        fresh["consistency"]["bicubic_p99_rel"], rel=1e-5
    )
    assert kept["consistency"]["exceeded"] == fresh["consistency"]["exceeded"]


@settings(max_examples=12, deadline=None, derandomize=True)
@given(
    a=st.floats(0.01, 1000.0),
    b=st.floats(-30000.0, 30000.0),
    seed=st.integers(0, 2**16),
)
def test_self_check_fallback_is_affine_equivariant(random_weights, a, b, seed):
    """The self-check's fallback (lanczos + the detail's gain over it) keeps the affine-intensity
    equivariance of the pipeline: scale the input by a and shift it by b, the output follows
    (the decision α and the gain are ratios, the interpolators and the detail are linear)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:40, :40]
    smooth = 50 * np.sin(xx / rng.uniform(8, 20)) * np.cos(yy / rng.uniform(8, 20)) + 100
    arr = (smooth + rng.normal(0, 1, smooth.shape)).astype(np.float32)[None]
    kw = {"maps": False, "tta": False, "ood": False, "warn": False}
    one, s1 = upscale_with_safeguards(MedImage(arr, modality="MR"), 2, str(random_weights), **kw)
    two, s2 = upscale_with_safeguards(
        MedImage((a * arr + b).astype(np.float32), modality="MR"), 2, str(random_weights), **kw
    )
    assert s1["self_check"]["applied"] and s2["self_check"]["applied"]
    assert abs(s1["self_check"]["gain"] - s2["self_check"]["gain"]) < 2e-3
    span = a * float(np.ptp(arr))
    np.testing.assert_allclose(two.array, a * one.array + b, atol=1e-4 * span + 2e-6 * abs(b))


@pytest.fixture(scope="module")
def default_x2():
    return PlaneUpscaler("default-x2", 2)


@settings(max_examples=15, deadline=None, derandomize=True)
@given(
    t=st.floats(0.05, 2.0),
    a=st.floats(0.01, 1000.0),
    b=st.floats(-30000.0, 30000.0),
    seed=st.integers(0, 2**16),
)
def test_full_scale_check_recovers_the_blend_that_agrees_with_the_input(default_x2, t, a, b, seed):
    """The input ``x = D h`` of a truth ``h``; an output ``y = p + (h − p)/t`` that departs from
    lanczos ``p`` by 1/t times the truth's departure. The fit finds ``g = t`` (the blend
    ``p + t·(y − p)`` is ``h`` itself), acts when ``t < 0.5``, and is invariant under an affine
    change of intensities (D, lanczos and the blend are linear and keep constants)."""
    from scipy import ndimage

    from medsr.pipeline import FULL_CHECK_GAIN_BELOW, detail_full_check
    from medsr.safeguards.consistency import degrade_planes
    from medsr.safeguards.operators import resolve_measurement

    rng = np.random.default_rng(seed)
    h = ndimage.gaussian_filter(rng.normal(0, 1, (96, 96)), 1.5) + 0.05 * rng.normal(0, 1, (96, 96))
    h = (100 + 40 * h).astype(np.float32)
    bicubic = resolve_measurement("bicubic", 2)

    def check(scale_by: float, shift: float) -> dict:
        truth = (scale_by * h + shift).astype(np.float64)
        x = MedImage(degrade_planes(bicubic, truth[None].astype(np.float32)), modality="MR")
        p = PlaneUpscaler("lanczos", 2, clip=False).upscale(x).array[0].astype(np.float64)
        y = MedImage((p + (truth - p) / t)[None].astype(np.float32), modality="MR")
        return detail_full_check(x, y, default_x2, bicubic)

    one, two = check(1.0, 0.0), check(a, b)
    assert one["alpha"] == pytest.approx(t, rel=1e-2, abs=2e-3), one
    assert one["applied"] == (t < FULL_CHECK_GAIN_BELOW)
    if one["applied"]:
        assert one["gain"] == pytest.approx(min(t, 1.0), abs=2e-3) and one["over"] == "lanczos"
    assert two["alpha"] == pytest.approx(one["alpha"], rel=2e-3, abs=2e-3)
    assert two["applied"] == one["applied"]


def test_the_model_outputs_error_is_computed_only_when_something_reads_it(monkeypatch):
    """A CT with the physics unknown: the summary's operator (``ct-detector``) is not the full-scale
    check's (bicubic), so the check does not ask for ``D(sr)``; when it blends the output, the
    summary's error is the blend's — computed once, for the output that is written (the model's
    own output is never degraded by ``ct-detector``)."""
    import medsr.pipeline as pipeline
    from medsr.safeguards.consistency import consistency_error, resolve_measurement

    calls: list[tuple[str, np.ndarray]] = []

    def counted(sr, lr, degradation=None, scale=None, **kw):
        calls.append((getattr(degradation, "kind", str(degradation)), sr.array.copy()))
        return consistency_error(sr, lr, degradation, scale, **kw)

    monkeypatch.setattr(pipeline, "consistency_error", counted)
    image = _padded_ct()
    rng = np.random.default_rng(3)
    noise = rng.normal(0, 40, image.array.shape).astype(np.float32) * (image.array > -1500)
    noisy = image.replace(array=image.array + noise)
    with pytest.warns(pipeline.DetailCheckWarning):
        out, summary = upscale_with_safeguards(noisy, 2, "fast-x2", consistency="off")
    assert summary["self_check"]["full_scale"]["applied"]
    model_output = PlaneUpscaler("fast-x2", 2).upscale(noisy).array
    kinds = [kind for kind, _ in calls]
    assert kinds[:2] == ["bicubic", "bicubic"]  # the check's: the peer's and the model output's
    assert np.array_equal(calls[1][1], model_output)
    assert kinds[2] == "ct-detector" and np.array_equal(calls[2][1], out.array)  # the blend's
    assert not any(k == "ct-detector" and np.array_equal(a, model_output) for k, a in calls)
    err = consistency_error(out, noisy, resolve_measurement("ct-detector", 2), 2)
    rng_ = pipeline._data_range(noisy)
    held = ~pipeline.no_data_mask(noisy).reshape(err.shape)  # over the pixels that hold data
    stats = pipeline._error_stats(
        err, rng_, summary["consistency"]["threshold_rel"], noisy.units, held
    )
    assert summary["consistency"]["error"]["p99"] == stats["p99"]
