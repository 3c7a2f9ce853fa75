"""upscale_with_safeguards: the one call the CLI, API and web service use."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

import medsr
from medsr.errors import InvalidParameterError
from medsr.image import MedImage
from medsr.pipeline import (
    CONSISTENCY_DEFAULT,
    ConsistencyWarning,
    OutOfDistributionWarning,
    upscale_with_safeguards,
    write_maps,
)
from tests.conftest import corpus_path
from tests.safeguards.conftest import make_weights


@pytest.fixture(scope="module")
def ct_small():
    return medsr.load_image(corpus_path("CT_small.dcm"))


@pytest.fixture(scope="module")
def mr_small():
    return medsr.load_image(corpus_path("MR_small.dcm"))


@pytest.fixture(scope="module")
def mr_weights(tmp_path_factory):
    return make_weights(tmp_path_factory.mktemp("w") / "tiny-mr.safetensors")


def test_default_is_auto_and_output_is_the_plain_upscale(mr_small):
    # auto projects only when the physics is known: none stated here, so the plain upscale
    assert CONSISTENCY_DEFAULT == "auto"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sr, summary = upscale_with_safeguards(mr_small, 2, "lanczos")
    np.testing.assert_array_equal(sr.array, medsr.upscale(mr_small, 2, "lanczos").array)
    assert summary["consistency"]["setting"] == "auto" and not summary["consistency"]["applied"]
    assert not summary["consistency"]["exceeded"] and summary["physics"] == "unknown"
    assert summary["degradation"]["kind"] == "kspace" and summary["warnings"] == []
    assert summary["uncertainty"]["map"]["max"] < 1e-2  # interpolators are equivariant
    assert set(sr.meta["maps"]) == {"consistency", "uncertainty", "error_bound"}
    assert all(m.shape == sr.spatial_shape for m in sr.meta["maps"].values())
    # an equivariant interpolator's bound is its calibration factor times the input's noise
    assert summary["error_bound"]["calibrated"] and summary["error_bound"]["factor"] > 0
    assert sr.meta["safeguards"] is summary
    json.dumps(summary)
    d = sr.meta["derivation"]
    assert d["model"] == "lanczos" and d["consistency"] == "auto (measured only)" and "summary" in d


def test_consistency_on_enforces_the_measurement(ct_small):
    sr_off, off = upscale_with_safeguards(ct_small, 2, "bicubic", consistency="off", tta=False)
    sr_on, on = upscale_with_safeguards(ct_small, 2, "bicubic", consistency=True, tta=False)
    assert on["consistency"]["error_before"] == off["consistency"]["error"]
    assert on["consistency"]["error"]["p99_rel"] < 0.1 * off["consistency"]["error"]["p99_rel"]
    assert on["consistency"]["method"].startswith("iterative back-projection")
    assert "uncertainty" not in sr_on.meta["maps"] and on["uncertainty"]["method"] == "none"
    assert sr_on.history[-1].startswith("data consistency") and sr_on.spacing == sr_off.spacing
    lo, hi = ct_small.array.min(), ct_small.array.max()
    assert sr_on.array.min() >= lo and sr_on.array.max() <= hi


def test_warnings_consistency_and_ood(tmp_path, ct_small, mr_small, mr_weights):
    with pytest.warns(ConsistencyWarning, match="disagrees"):
        _, s = upscale_with_safeguards(
            mr_small, 2, "bicubic", degradation="bicubic", threshold=1e-4, relative=None, tta=False
        )
    assert s["consistency"]["exceeded"] and len(s["warnings"]) == 1
    # relative to bicubic interpolation: bicubic itself never exceeds, an untrained network does
    _, s = upscale_with_safeguards(mr_small, 2, "bicubic", threshold=1e-4, tta=False)
    assert not s["consistency"]["exceeded"] and s["consistency"]["bicubic_p99_rel"] > 1e-4
    with pytest.warns(ConsistencyWarning, match="x bicubic"):
        _, s = upscale_with_safeguards(mr_small, 2, str(mr_weights), tta=False, self_check=False)
    assert s["consistency"]["error"]["p99_rel"] > 0.05 and not s["ood"]["flag"]
    # an untrained MR-only network on CT: out of distribution, and its output contradicts the data
    with pytest.warns(UserWarning) as caught:
        _, s = upscale_with_safeguards(ct_small, 2, str(mr_weights), tta=False)
    # (its low band is bicubic's by construction, so the consistency check may stay quiet)
    assert OutOfDistributionWarning in {w.category for w in caught}
    assert "modality CT" in str(caught[0].message)
    assert s["ood"]["flag"] and s["ood"]["training_modalities"] == ["MR"]
    assert len(s["warnings"]) == len(caught)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, s = upscale_with_safeguards(ct_small, 2, str(mr_weights), tta=False, warn=False)
    assert s["warnings"]


def test_learned_model_uncertainty_and_volume(tmp_path, rng):
    w = make_weights(tmp_path / "any.safetensors", modalities=("MR", "CT"))
    from scipy import ndimage

    smooth = ndimage.gaussian_filter(rng.uniform(0, 100, (2, 12, 10)), (0, 1, 1))
    vol = MedImage(smooth.astype(np.float32), modality="MR")
    # a random network: its detail fails the full-scale check, which would scale it (and its
    # spread) to nothing (test_full_scale_check_*); here the map itself is under test
    sr, s = upscale_with_safeguards(vol, 2, str(w), consistency="on", warn=False, self_check=False)
    assert sr.meta["maps"]["uncertainty"].shape == (2, 24, 20)
    assert s["uncertainty"]["map"]["p99"] > 0 and s["uncertainty"]["transforms"] == 8
    assert not s["ood"]["flag"]
    written = write_maps(sr.meta["maps"], tmp_path / "maps", like=sr, summary=s)
    assert {p.name for ps in written.values() for p in ps} == {
        "consistency.nii.gz",
        "uncertainty.nii.gz",
        "summary.json",
    }


def test_bad_arguments(mr_small):
    with pytest.raises(InvalidParameterError, match="'auto', 'on' or 'off"):
        upscale_with_safeguards(mr_small, 2, "bicubic", consistency="maybe")
    with pytest.raises(InvalidParameterError, match="scale"):
        upscale_with_safeguards(mr_small, 5, "bicubic")
    with pytest.raises(InvalidParameterError, match="through-plane"):
        upscale_with_safeguards(mr_small, 2, "bicubic", degradation="thick-slice")
    with pytest.raises(InvalidParameterError, match="unknown degradation"):
        upscale_with_safeguards(mr_small, 2, "bicubic", degradation="foo")


def test_assumed_degradation_prefers_the_model_card(tmp_path, mr_small):
    from medsr.pipeline import assumed_degradation

    card = {"degradation": {"kind": "bicubic", "params": {}, "steps": []}}
    assert assumed_degradation(None, card, 2, "MR")[0].kind == "bicubic"
    assert assumed_degradation(None, card, 2, "MR")[1] == "model card"
    assert assumed_degradation("auto", card, 2, "MR") == (assumed_degradation(None, {}, 2, "MR"))
    ranged = {"degradation": {"kind": "ct-detector", "params": {"sigma": [0.3, 1.2]}}}
    assert assumed_degradation(None, ranged, 2, "CT")[1] == "modality default"
    assert (
        assumed_degradation(None, {"degradation": {"kind": "default"}}, 2, "MR")[0].kind == "kspace"
    )
    assert assumed_degradation("radiograph", card, 2, "MR")[1] == "given"
    w = make_weights(tmp_path / "bic.safetensors", degradation={"kind": "bicubic", "params": {}})
    _, s = upscale_with_safeguards(mr_small, 2, str(w), tta=False, warn=False)
    assert s["degradation"]["kind"] == "bicubic" and s["degradation"]["source"] == "model card"


def test_a_loaded_model_is_shared_and_gives_the_same_result(tmp_path, mr_small, mr_weights):
    """Batches pass their loaded PlaneUpscaler: no reload, same pixels, same provenance."""
    from medsr.inference.planes import PlaneUpscaler

    loaded = PlaneUpscaler(str(mr_weights), 2, device="cpu")
    shared = PlaneUpscaler(loaded, 2)
    assert shared.net is loaded.net and shared.card is loaded.card and shared.model == loaded.model
    np.testing.assert_array_equal(
        medsr.upscale(mr_small, 2, loaded).array, medsr.upscale(mr_small, 2, str(mr_weights)).array
    )
    with pytest.raises(InvalidParameterError, match="×2, not ×4"):
        PlaneUpscaler(loaded, 4)
    by_name, _ = upscale_with_safeguards(mr_small, 2, str(mr_weights), warn=False)
    by_loaded, s_loaded = upscale_with_safeguards(mr_small, 2, loaded, warn=False)
    np.testing.assert_array_equal(by_name.array, by_loaded.array)
    np.testing.assert_array_equal(
        by_name.meta["maps"]["uncertainty"], by_loaded.meta["maps"]["uncertainty"]
    )
    assert by_name.meta["provenance"] == by_loaded.meta["provenance"]
    assert by_loaded.meta["provenance"]["model_checksum"].startswith("sha256:")
    assert "timing_ms" in s_loaded and "timing_ms" not in by_loaded.meta["provenance"]["safeguards"]


def test_precomputed_output_and_save_safeguarded(tmp_path, ct_small):
    from medsr.io.sidecar import read_sidecar
    from medsr.pipeline import save_safeguarded

    plain = medsr.upscale(ct_small, 2, "bicubic")
    ref, _ = upscale_with_safeguards(ct_small, 2, "bicubic", consistency="on", tta=False)
    got, _ = upscale_with_safeguards(
        ct_small, 2, "bicubic", consistency="on", tta=False, output=plain
    )
    np.testing.assert_array_equal(ref.array, got.array)
    assert ref.meta["provenance"] == got.meta["provenance"]
    with pytest.raises(InvalidParameterError, match="precomputed"):
        upscale_with_safeguards(ct_small, 2, "bicubic", output=plain)  # tta needs the model
    with pytest.raises(InvalidParameterError):
        upscale_with_safeguards(ct_small, 3, "bicubic", tta=False, output=plain)
    sr, summary = upscale_with_safeguards(ct_small, 2, "lanczos", consistency="on")
    out = save_safeguarded(sr, tmp_path / "sr.nii.gz", summary=summary, maps_dir=tmp_path / "m")
    side = read_sidecar(out)
    assert side["provenance"]["consistency"] == "on" and side["provenance"]["model"] == "lanczos"
    assert "maps" not in side and sr.meta["maps"]  # the maps are files, not sidecar content
    assert {p.name for p in (tmp_path / "m").iterdir()} >= {
        "consistency.png", "uncertainty.png", "summary.json", "consistency_dicom",
    }  # fmt: skip
    assert (
        json.loads((tmp_path / "m" / "summary.json").read_text())["consistency"]["setting"] == "on"
    )
    # no maps folder: only the image
    save_safeguarded(sr, tmp_path / "only.png", summary=summary)
    assert (tmp_path / "only.png").is_file() and not (tmp_path / "only").exists()


def test_detail_self_check_scales_down_invented_detail(mr_weights):
    """A random network's 'detail' does not hold up one scale down: the self-check scales it
    down (towards the base interpolator); the shipped default's detail on a real CT is kept."""
    yy, xx = np.mgrid[:96, :96]
    smooth = (100 + 50 * np.sin(xx / 25.0) * np.cos(yy / 31.0)).astype(np.float32)[None]
    img = MedImage(smooth, modality="MR")
    sr, summary = upscale_with_safeguards(
        img, 2, str(mr_weights), maps=False, tta=False, ood=False, warn=False
    )
    check = summary["self_check"]
    assert check["checked"] and check["applied"] and check["gain"] < 0.5, check
    assert sr.meta["derivation"]["detail_gain"] == check["gain"]
    raw, _ = upscale_with_safeguards(img, 2, str(mr_weights), maps=False, tta=False, ood=False, warn=False,
                                     self_check=False)  # fmt: skip
    base = medsr.upscale(img, 2, "bicubic").array
    assert np.abs(sr.array - base).mean() < np.abs(raw.array - base).mean()
    ct = medsr.load_image(corpus_path("CT_small.dcm"))
    _, s2 = upscale_with_safeguards(ct, 2, "default-x2", maps=False, tta=False, warn=False)
    assert s2["self_check"]["checked"] and not s2["self_check"]["applied"], s2["self_check"]
    _, s3 = upscale_with_safeguards(ct, 2, "bicubic", maps=False, tta=False, warn=False)
    assert s3["self_check"] == {"checked": False}  # classical interpolators are not checked


def _head_ct_x2() -> tuple[MedImage, np.ndarray, np.ndarray, np.ndarray]:
    """The smooth thin-slice head CT (a validation image, 0.43 mm pixels, -2000 HU outside the
    reconstruction circle, no PixelPaddingValue) degraded ×2 as a scanner would make it: the
    input, the truth, the truth's fill and the input's fill blocks."""
    from medsr.degradations import degrade_image

    hr = medsr.load_image(corpus_path("J2K_pixelrep_mismatch.dcm"))
    a = hr.array[0]
    fill = a == a.min()
    field = np.where(fill, np.float32(np.median(a[~fill & (a < -500)])), a)
    lr = degrade_image(hr.replace(array=field[None]), "bicubic", 2, generator=0)
    blocks = fill.reshape(256, 2, 256, 2).mean(axis=(1, 3)) >= 0.5  # the scanner's LR fill
    lr.array[0][blocks] = a.min()
    return lr, a, fill, blocks


def test_a_failed_detail_check_falls_back_to_the_best_classical_peer():
    """The smooth head CT is where the default's detail fails (it sharpens what the scanner
    smoothed: 12 dB below bicubic). One scale down the image is not smooth and the detail holds
    up (α ≈ 0.93); the full-scale check catches it, and the output is lanczos plus the detail
    that holds up over lanczos: inside the reconstruction circle at least as close to the truth
    as lanczos (the best classical peer), with the padding exact."""
    lr, a, fill, blocks = _head_ct_x2()
    sr, summary = upscale_with_safeguards(lr, 2, "default-x2", maps=False, tta=False, warn=False)
    check = summary["self_check"]
    assert check["checked"] and not check["applied"] and check["alpha"] > 0.8, check
    full = check["full_scale"]
    assert full["applied"] and full["alpha"] < 0.25 and full["over"] == "lanczos", full
    assert 0 <= full["gain"] <= 1 and sr.meta["derivation"]["full_scale_gain"] == full["gain"]
    assert any("full-scale check" in w for w in summary["warnings"])
    from medsr.safeguards.provenance import summary_text

    assert "full-scale detail check g" in summary_text(summary) and "lanczos +" in summary_text(
        summary
    )
    lanczos = medsr.upscale(lr, 2, "lanczos").array[0]
    inside = ~fill & ~np.repeat(np.repeat(blocks, 2, 0), 2, 1)
    inside[:4], inside[-4:], inside[:, :4], inside[:, -4:] = False, False, False, False
    assert np.all(sr.array[0][np.repeat(np.repeat(blocks, 2, 0), 2, 1)] == a.min())  # padding exact

    def rmse(x: np.ndarray) -> float:
        return float(np.sqrt(np.mean((x[inside] - a[inside]) ** 2)))

    assert rmse(sr.array[0]) <= rmse(lanczos), (rmse(sr.array[0]), rmse(lanczos))


def test_the_self_check_leaves_padding_out(monkeypatch):
    """Padding holds no data: the self-check degrades it as the darkest measured value and fits
    the detail on measured pixels only, so a CT's fill outside the reconstruction circle gives
    the α of the same image with air there (session 14: with the -2000 HU fill degraded as signal
    the check measured the model on that edge, α 0.11 instead of 0.93)."""
    from medsr.inference.planes import PlaneUpscaler
    from medsr.pipeline import detail_self_check

    lr, a, _, blocks = _head_ct_x2()
    air_hu = np.float32(np.median(a[(a > -1100) & (a < -500)]))
    air = lr.replace(array=np.where(blocks, air_hu, lr.array[0])[None])
    up = PlaneUpscaler("default-x2", 2)
    with_fill, with_air = detail_self_check(lr, up), detail_self_check(air, up)
    assert with_fill["alpha"] == pytest.approx(with_air["alpha"], abs=0.02), (with_fill, with_air)
    # DICOM padding given per slice (no CT rule: read as MR) on a volume whose planes the check
    # samples (4 of 20 within a bound of 4 planes; the default bound takes 16, 4x the time):
    # the per-slice values follow the sampled planes
    import medsr.pipeline as pipeline

    monkeypatch.setattr(pipeline, "SELF_CHECK_MAX_PIXELS", 4 * 256 * 256)
    n = 20
    pad = {"value": [float(a.min())] * n, "range_limit": [None] * n}
    tagged = MedImage(np.stack([lr.array[0]] * n), modality="MR", meta={"padding": pad})
    aired = MedImage(np.stack([air.array[0]] * n), modality="MR")
    one, two = detail_self_check(tagged, up), detail_self_check(aired, up)
    assert one["planes"] == "4 of 20" and one["alpha"] == pytest.approx(two["alpha"], abs=0.02)


def test_detail_self_check_looks_at_a_bounded_sample(monkeypatch):
    """The self-check's cost does not grow with the input: a volume is checked on evenly spaced
    planes and a large plane on its centre, within SELF_CHECK_MAX_PIXELS; α from the sample is
    the one from the whole image to within the fit's spread."""
    import medsr.pipeline as pipeline
    from medsr.inference.planes import PlaneUpscaler

    vol = medsr.load_image(corpus_path("emri_small.dcm"))  # 10 planes of 64² (real MR)
    up = PlaneUpscaler("default-x2", 2)
    full = pipeline.detail_self_check(vol, up)
    assert full["planes"] == "10 of 10" and full["region"] == [64, 64]
    monkeypatch.setattr(pipeline, "SELF_CHECK_MAX_PIXELS", 3 * 64 * 64)
    part = pipeline.detail_self_check(vol, up)
    assert part["planes"] == "3 of 10" and part["region"] == [64, 64]
    assert abs(part["alpha"] - full["alpha"]) < 0.25, (part, full)
    ct = medsr.load_image(corpus_path("CT_small.dcm"))  # one plane of 128²: its centre
    monkeypatch.setattr(pipeline, "SELF_CHECK_MAX_PIXELS", 64 * 64)
    crop = pipeline.detail_self_check(ct, up)
    assert crop["planes"] == "1 of 1" and crop["region"] == [64, 64] and crop["checked"]


def test_consistency_summary_looks_at_a_bounded_sample(monkeypatch):
    """Without maps the consistency summary and warning come from evenly spaced planes within
    CONSISTENCY_SAMPLE_PIXELS (recorded); the output is untouched, the 99th percentile stays the
    volume's to within its spread, an inconsistent output is still flagged, and maps see every
    plane."""
    import medsr.pipeline as pipeline

    vol = medsr.load_image(corpus_path("emri_small.dcm"))  # 10 planes of 64² (real MR)
    opts = dict(tta=False, warn=False, self_check=False, ood=False)
    full, s_full = upscale_with_safeguards(vol, 2, "fast-x2", maps=False, **opts)
    assert "planes" not in s_full["consistency"]
    monkeypatch.setattr(pipeline, "CONSISTENCY_SAMPLE_PIXELS", 3 * 64 * 64)
    part, s_part = upscale_with_safeguards(vol, 2, "fast-x2", maps=False, **opts)
    assert s_part["consistency"]["planes"] == "3 of 10"
    np.testing.assert_array_equal(part.array, full.array)
    p_full, p_part = (s["consistency"]["error"]["p99_rel"] for s in (s_full, s_part))
    assert 0.5 * p_full <= p_part <= 2 * p_full, (p_part, p_full)
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.2 * float(np.ptp(vol.array)), full.array.shape).astype(np.float32)
    noisy = full.replace(array=full.array + noise)
    _, s_bad = upscale_with_safeguards(vol, 2, "fast-x2", maps=False, output=noisy, **opts)
    assert s_bad["consistency"]["planes"] == "3 of 10" and s_bad["consistency"]["exceeded"]
    with_maps, s_maps = upscale_with_safeguards(vol, 2, "fast-x2", maps=True, **opts)
    assert "planes" not in s_maps["consistency"]
    assert with_maps.meta["maps"]["consistency"].shape == full.array.shape


def test_degradation_auto_reads_the_physics_from_the_header(mr_small):
    """MR → k-space truncation (zero-filled k-space base, consistency auto projects); a CT
    header states no physics (consistency auto only measures)."""
    sr, s = upscale_with_safeguards(
        mr_small, 2, "default-x2", degradation="auto", maps=False, tta=False, warn=False
    )
    assert s["physics"] == "kspace" and s["base_interpolator"] == "kspace"
    assert s["degradation"]["source"].startswith("header: MR") and s["consistency"]["applied"]
    assert sr.meta["derivation"]["low_band"]["base"] == "kspace"
    ct = medsr.load_image(corpus_path("CT_small.dcm"))
    _, s2 = upscale_with_safeguards(
        ct, 2, "default-x2", degradation="auto", maps=False, tta=False, warn=False
    )
    assert s2["physics"] == "unknown" and not s2["consistency"]["applied"]


@pytest.mark.parametrize("kind", ["ultrasound", "ct-detector", "radiograph", "ct-sparse-view"])
def test_every_in_plane_physics_runs_the_self_check(kind):
    """Each in-plane kind of --degradation upscales, self-checks one scale down with that
    physics and projects (consistency auto). ``ultrasound`` as a *simulator* decimates only the
    lateral axis; as stated physics it is the lateral beam blur then ↓s on both axes, and the
    self-check degrades with that measurement (it raised a shape error before)."""
    ct = medsr.load_image(corpus_path("CT_small.dcm"))
    if kind == "ct-sparse-view":  # its projection grows as N³ (a Radon transform): 64², not 128²
        ct = ct.replace(array=np.ascontiguousarray(ct.array[..., 32:96, 32:96]))
    sr, s = upscale_with_safeguards(
        ct, 2, "fast-x2", degradation=kind, maps=False, tta=False, warn=False
    )
    assert sr.array.shape[-2:] == tuple(2 * n for n in ct.array.shape[-2:])
    assert s["physics"] == kind and s["consistency"]["applied"]
    assert s["self_check"]["checked"] and s["self_check"]["degradation"] == kind


def test_costly_sparse_view_projection_is_not_run_under_auto():
    """Sparse-view CT's forward model grows as N³ (a Radon transform): at ×3 a 128² slice's
    projection would take minutes, a 512² slice's at ×2 an hour. ``auto`` then measures (one
    plane) and says why it did not project; ``on`` would still project."""
    ct = medsr.load_image(corpus_path("CT_small.dcm"))
    with pytest.warns(ConsistencyWarning, match="--consistency on applies it"):
        sr, s = upscale_with_safeguards(
            ct, 3, "bicubic", degradation="ct-sparse-view", maps=False, tta=False
        )
    assert sr.array.shape[-2:] == (384, 384)
    assert not s["consistency"]["applied"] and "not applied" in s["consistency"]["skipped"]
    assert s["consistency"]["error"]["p99_rel"] >= 0
    assert any("not applied" in w for w in s["warnings"])


def test_path_errors_come_before_the_options_and_torch(tmp_path):
    """A missing input or an existing output fails at once (in a new process, before torch and
    the model are loaded) with its own message: upscale, degrade and batch."""
    import subprocess
    import sys

    existing = tmp_path / "out.nii.gz"
    existing.write_bytes(b"x")
    source = tmp_path / "in.npy"
    np.save(source, np.zeros((8, 8), np.float32))
    missing = tmp_path / "missing.dcm"
    code = f"""
import sys
from medsr.api import degrade_file, upscale_file
from medsr.batch import run_batch
from medsr.errors import InputNotFoundError, OutputExistsError
for call, args, error in (
    (upscale_file, (r"{missing}", r"{tmp_path / "x"}"), InputNotFoundError),
    (upscale_file, (r"{source}", r"{existing}"), OutputExistsError),
    (degrade_file, (r"{missing}", r"{tmp_path / "y.nii.gz"}"), InputNotFoundError),
    (degrade_file, (r"{source}", r"{existing}"), OutputExistsError),
    (run_batch, (r"{tmp_path / "no_folder"}", r"{tmp_path / "z"}"), InputNotFoundError),
):
    try:
        call(*args, **({{}} if call is degrade_file else {{"model": "fast-x2"}}))
    except error as exc:
        print(exc)
    else:
        raise SystemExit(f"{{call.__name__}}{{args}} was accepted")
print("torch" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert ["does not exist" in x or "already exists" in x for x in lines[:-1]] == [True] * 5, lines
    assert lines[-1] == "False"


def test_option_errors_come_before_torch_is_imported():
    """A wrong option fails at once: checking the options (modality, method, degradation kind)
    and reading a model card need no torch (a new process imports it in ~2 s)."""
    import subprocess
    import sys

    code = """
import sys
from medsr.errors import InvalidParameterError
from medsr.pipeline import check_options
from medsr.models.weights import read_card
from medsr.models.resolver import shipped_weights
for bad in ({"degradation": "foo"}, {"modality": "XYZ"}, {"method": "magic"}, {"scale": 5}):
    try:
        check_options(**{"scale": 2, "model": None, **bad})
    except InvalidParameterError:
        pass
    else:
        raise SystemExit(f"{bad} was accepted")
assert read_card(shipped_weights()["fast-x2"])["architecture"]
print("torch" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_the_output_must_not_be_the_input(tmp_path):
    """Inputs are never modified: ``upscale IN IN --overwrite`` is refused before any work."""
    from medsr.pipeline import upscale_file

    source = tmp_path / "in.nii.gz"
    medsr.save_image(MedImage(np.ones((2, 16, 16), np.float32), modality="CT"), source)
    before = source.read_bytes()
    with pytest.raises(InvalidParameterError, match="must not be the input"):
        upscale_file(source, source, model="bicubic", overwrite=True)
    assert source.read_bytes() == before


def test_the_data_range_leaves_padding_out():
    """The consistency summary's relative errors are fractions of the range the input measured:
    a CT's -3024 HU fill outside the reconstruction circle does not widen it."""
    from medsr.pipeline import _data_range

    a = np.full((1, 64, 64), -3024.0, np.float32)
    a[0, 8:56, 8:56] = np.linspace(-1000, 1000, 48 * 48, dtype=np.float32).reshape(48, 48)
    assert _data_range(MedImage(a, modality="CT", units="HU")) == pytest.approx(2000.0)
    assert _data_range(MedImage(a, modality="MR")) == pytest.approx(4024.0)  # no CT rule


def test_full_scale_check_needs_the_physics_on_k_space_modalities():
    """With unknown physics the full-scale check assumes bicubic, except on a modality acquired
    in k-space (MR), whose truncation leaves the measured band unattenuated: there it waits for
    the physics to be stated. A zero-filled k-space base (stated k-space physics) is not checked:
    its detail lies outside the measured band."""
    mr = medsr.load_image(corpus_path("MR_small.dcm"))
    kw = {"maps": False, "tta": False, "warn": False}
    _, unknown = upscale_with_safeguards(mr, 2, "default-x2", **kw)
    full = unknown["self_check"]["full_scale"]
    assert not full["checked"] and "k-space" in full["reason"], full
    _, stated = upscale_with_safeguards(mr, 2, "default-x2", degradation="bicubic", **kw)
    full = stated["self_check"]["full_scale"]
    assert full["checked"] and full["degradation"] == "bicubic" and full["alpha"] > 0.5, full
    _, kspace = upscale_with_safeguards(mr, 2, "default-x2", degradation="kspace", **kw)
    full = kspace["self_check"]["full_scale"]
    assert not full["checked"] and "outside the measured band" in full["reason"], full
    ct = medsr.load_image(corpus_path("CT_small.dcm"))  # unknown physics on CT: bicubic assumed
    _, s = upscale_with_safeguards(ct, 2, "default-x2", **kw)
    assert s["self_check"]["full_scale"]["checked"], s["self_check"]
    assert s["self_check"]["full_scale"]["degradation"] == "bicubic"


def test_full_scale_check_looks_at_a_bounded_sample():
    """The full-scale check's cost does not grow with the input: it fits on the middle planes of a
    volume and the centre of a large plane, FULL_CHECK_MAX_PIXELS input pixels at most."""
    from scipy import ndimage

    from medsr.pipeline import FULL_CHECK_MAX_PIXELS, FULL_CHECK_PLANES

    ct = medsr.load_image(corpus_path("CT_small.dcm"))  # 128²: FULL_CHECK_PLANES whole planes
    vol = ct.replace(array=np.repeat(ct.array, 20, axis=0))
    kw = {"maps": False, "tta": False, "warn": False, "ood": False}
    _, s = upscale_with_safeguards(vol, 2, "fast-x2", **kw)
    full = s["self_check"]["full_scale"]
    assert full["planes"] == f"{FULL_CHECK_PLANES} of 20" and full["region"] == [128, 128], full
    big_vol = np.tile(ct.array, (6, 4, 4))  # 6 planes of 512²: their centres
    _, s = upscale_with_safeguards(ct.replace(array=big_vol), 2, "fast-x2", **kw)
    full = s["self_check"]["full_scale"]
    side = int(np.sqrt(FULL_CHECK_MAX_PIXELS // FULL_CHECK_PLANES))
    assert full["planes"] == f"{FULL_CHECK_PLANES} of 6" and full["region"] == [side, side], full
    rng = np.random.default_rng(1)
    big = ndimage.gaussian_filter(rng.normal(0, 100, (1, 1024, 600)), (0, 2, 2)).astype(np.float32)
    _, s = upscale_with_safeguards(MedImage(big, modality="US"), 2, "fast-x2", **kw)
    full = s["self_check"]["full_scale"]
    side = int(np.sqrt(FULL_CHECK_MAX_PIXELS))
    assert full["checked"] and full["planes"] == "1 of 1" and full["region"] == [side, side], full


# ---------------------------------------------------------------------- self-ensemble
def _ensemble_reference(image: MedImage, model: str, scale: int) -> np.ndarray:
    """The mean of the guarded model's outputs for the 8 flips/rotations, each turned back."""
    from medsr.inference.planes import PlaneUpscaler
    from medsr.safeguards.maps import DIHEDRAL, dihedral, dihedral_inverse

    up = PlaneUpscaler(model, scale)
    outs = [
        dihedral_inverse(
            up.upscale(
                image.replace(array=np.ascontiguousarray(dihedral(image.array, k, f)))
            ).array,
            k,
            f,
        )
        for k, f in DIHEDRAL
    ]
    return np.mean(outs, axis=0)


def test_ensemble_is_the_mean_over_the_eight_flips_and_rotations(mr_small):
    """``ensemble=True``: the output is the mean of the model's (guarded) outputs for the 8
    flips/90° rotations, recorded in the summary, the derivation and the history; without maps
    no uncertainty map is made; with them the map is the spread of the 8 it averaged."""
    opts = dict(consistency="off", maps=False, tta=False, ood=False, warn=False, self_check=False)
    plain, _ = upscale_with_safeguards(mr_small, 2, "fast-x2", **opts)
    ens, s = upscale_with_safeguards(mr_small, 2, "fast-x2", ensemble=True, **opts)
    np.testing.assert_allclose(ens.array, _ensemble_reference(mr_small, "fast-x2", 2), atol=1e-3)
    assert np.abs(ens.array - plain.array).max() > 1.0  # it is not the one pass
    assert s["ensemble"] == "mean of 8 flips/90-degree rotations"
    assert ens.meta["derivation"]["ensemble"] == s["ensemble"]
    assert any("self-ensemble" in str(step) for step in ens.history)
    assert s["uncertainty"]["method"] == "none" and "maps" not in ens.meta
    _, with_maps = upscale_with_safeguards(
        mr_small, 2, "fast-x2", ensemble=True, **{**opts, "maps": True, "tta": True}
    )
    assert (
        with_maps["uncertainty"]["transforms"] == 8 and with_maps["uncertainty"]["map"]["max"] > 0
    )


@pytest.mark.parametrize("k,flip", [(1, False), (0, True), (3, True)])
def test_ensemble_is_equivariant_and_keeps_the_low_band(mr_small, k, flip):
    """The mean over the dihedral group turns with its input (what no single network pass
    does), and keeps the low band of the base exactly, as each pass does (before the clip to the
    input's range, which moves it in both alike)."""
    import torch

    from medsr.models.lowband import low_band
    from medsr.safeguards.maps import dihedral

    opts = dict(
        consistency="off",
        maps=False,
        tta=False,
        ood=False,
        warn=False,
        self_check=False,
        ensemble=True,
    )
    out, _ = upscale_with_safeguards(mr_small, 2, "fast-x2", **opts)
    turned = mr_small.replace(array=np.ascontiguousarray(dihedral(mr_small.array, k, flip)))
    out_t, _ = upscale_with_safeguards(turned, 2, "fast-x2", **opts)
    rng = float(out.array.max() - out.array.min())
    assert np.abs(out_t.array - dihedral(out.array, k, flip)).max() < 1e-5 * rng
    out, _ = upscale_with_safeguards(mr_small, 2, "fast-x2", clip=False, **opts)
    base = medsr.upscale(mr_small, 2, "bicubic", clip=False).array
    lb = lambda a: low_band(torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)), 2).numpy()  # noqa: E731
    assert np.abs(lb(out.array) - lb(base)).max() < 1e-4 * rng


def test_ensemble_leaves_interpolators_alone_and_is_refused_where_it_means_nothing(
    mr_small, tmp_path
):
    """A classical interpolator is symmetric already: ``ensemble`` changes nothing; zero-shot,
    through-plane and a precomputed output refuse it with a clear error."""
    from medsr.pipeline import check_options

    opts = dict(consistency="off", maps=False, tta=False, ood=False, warn=False)
    a, _ = upscale_with_safeguards(mr_small, 2, "bicubic", **opts)
    b, s = upscale_with_safeguards(mr_small, 2, "bicubic", ensemble=True, **opts)
    np.testing.assert_array_equal(a.array, b.array)
    assert "ensemble" not in s
    for kw in ({"method": "zero-shot"}, {"through_plane": True}):
        with pytest.raises(InvalidParameterError, match="ensemble"):
            check_options(ensemble=True, **kw)
    with pytest.raises(InvalidParameterError, match="ensemble"):
        upscale_with_safeguards(mr_small, 2, "fast-x2", output=a, ensemble=True, **opts)


def _soft_disk(amplitude: float, width: float, size: int = 256) -> MedImage:
    """A CT disk ``amplitude`` HU above air with a tanh edge ``width`` px wide (a soft kernel)."""
    yy, xx = np.mgrid[0:size, 0:size]
    r = np.hypot(yy - (size / 2 + 0.3), xx - (size / 2 - 0.4))
    disk = -1000.0 + amplitude / 2.0 * (1.0 + np.tanh((60.0 - r) / width))
    return MedImage(
        disk.astype(np.float32)[None], spacing=(1.0, 1.0, 1.0), modality="CT", units="HU"
    )


@pytest.mark.parametrize("name", ["default-x2", "fast-x2", "default-x4", "fast-x4"])
def test_a_soft_bone_edge_is_never_made_worse_than_bicubic(name):
    """A bone-on-air step (2,500 HU) reconstructed with a soft kernel: a network that learned one
    sharpness for CT sharpens it and rings (``benchmarks/results/faithful_edges_x*.md``). As
    ``medsr upscale`` runs the shipped models (physics unknown, the detail checks on), the error
    stays at or below bicubic's for every width."""
    from medsr.degradations import degrade_image

    scale = int(name[-1])
    for width in (0.5, 1.5, 3.0):
        hr = _soft_disk(2500.0, width)
        lr = degrade_image(hr, "bicubic", scale, generator=0)
        c = 2 * scale
        err = {}
        for model in (name, "bicubic"):
            sr, _ = upscale_with_safeguards(
                lr, scale, model, maps=False, tta=False, ood=False, warn=False
            )
            err[model] = float(np.sqrt(np.mean((sr.array[0] - hr.array[0])[c:-c, c:-c] ** 2)))
        assert err[name] <= err["bicubic"], (width, err)


def _ct_nifti_with_fill(path, raw: bool = False):
    """CT_small's HU (or its raw stored values) in an int16 NIfTI, with the scanner's −3024 HU
    fill outside a circle (no header says so: NIfTI has no PixelPaddingValue)."""
    import nibabel as nib

    hu = medsr.load_image(corpus_path("CT_small.dcm")).array[0]
    yy, xx = np.mgrid[:128, :128]
    outside = (yy - 63.5) ** 2 + (xx - 63.5) ** 2 >= 60**2
    arr = hu + 1024 if raw else np.where(outside, -3024, hu)
    nib.save(nib.Nifti1Image(arr.T[:, :, None].astype(np.int16), np.diag([0.7, 0.7, 5, 1])), path)
    return outside


def test_nifti_ct_stated_by_modality_keeps_its_fill_exact(tmp_path):
    """``--modality CT`` on a NIfTI in Hounsfield units labels them HU, and with them the CT fill
    outside the reconstruction circle is padding: kept exact, never fed as signal (before, the
    units stayed 'a.u.', 2,653 of its output pixels changed and the field of view got values
    below −1100 HU from the fill's edge)."""
    from medsr.pipeline import upscale_file

    src, out = tmp_path / "ct.nii.gz", tmp_path / "out.nii.gz"
    outside = _ct_nifti_with_fill(src)
    upscale_file(src, out, scale=2, model="fast-x2", modality="CT")
    result = medsr.load_image(out)
    assert result.units == "HU" and result.modality == "CT"
    sr = result.array[0]
    up = np.repeat(np.repeat(outside, 2, 0), 2, 1)
    assert np.all(sr[up] == -3024)
    assert sr[~up].min() >= medsr.load_image(src).array[0][~outside].min() - 100


def test_modality_rules_live_in_the_core_and_the_pipeline_re_exports_them():
    """``medsr.reports`` (below the pipeline) states modalities too: one rule, in medsr.modality."""
    import medsr.modality
    import medsr.pipeline

    assert medsr.pipeline.set_modality is medsr.modality.set_modality
    assert medsr.pipeline.check_modality is medsr.modality.check_modality


def test_modality_states_hu_only_for_values_that_read_as_hu(tmp_path):
    from medsr.pipeline import set_modality

    src = tmp_path / "raw.nii.gz"
    _ct_nifti_with_fill(src, raw=True)
    raw = medsr.load_image(src)
    assert set_modality(raw, "CT").units == "a.u."  # stored values 0…4095: not HU
    assert set_modality(raw, "MR").units == raw.units
    dicom = medsr.load_image(corpus_path("CT_small.dcm"))
    with pytest.warns(UserWarning, match="header states modality CT"):
        assert set_modality(dicom, "MR").modality == "CT"


def test_kspace_stated_for_signed_data_measures_a_real_image():
    """k-space physics stated for an image with negative values (a CT in HU): the measurement is
    the truncation of a real image, whose error the projection drives to ~0; measured as a
    magnitude it reported errors of ~400 HU mean on an output the projection had made
    consistent. A magnitude MR keeps the magnitude model."""
    from medsr.pipeline import upscale_with_safeguards

    ct = medsr.load_image(corpus_path("CT_small.dcm"))
    with pytest.warns(UserWarning, match="no magnitude image"):
        _, report = upscale_with_safeguards(
            ct, 2, "bicubic", degradation="kspace", maps=False, tta=False, ood=False
        )
    cons = report["consistency"]
    assert report["physics"] == "kspace" and report["degradation"]["params"]["image"] == "real"
    assert cons["applied"] and cons["error"]["p99_rel"] < 1e-3, cons["error"]
    mr = medsr.load_image(corpus_path("MR_small.dcm"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        _, report = upscale_with_safeguards(
            mr, 2, "bicubic", degradation="kspace", maps=False, tta=False, ood=False
        )
    assert "image" not in report["degradation"]["params"]


def test_ensemble_of_a_classical_interpolator_is_said_not_applied():
    from medsr.pipeline import upscale_with_safeguards

    mr = medsr.load_image(corpus_path("MR_small.dcm"))
    with pytest.warns(UserWarning, match="--ensemble not applied"):
        _, report = upscale_with_safeguards(mr, 2, "bicubic", ensemble=True, maps=False, tta=False)
    assert any("--ensemble not applied" in w for w in report["warnings"])


def test_an_input_without_pixel_spacing_is_said_to_have_none():
    """A DICOM without PixelSpacing is read at 1 mm; the output carries no spacing either, so
    its pixels look ×s the field of view in a viewer: the run says so (and records it)."""
    from pydicom.data import get_testdata_file

    from medsr.pipeline import upscale_with_safeguards

    bare = medsr.load_image(get_testdata_file("emri_small.dcm"))
    with pytest.warns(UserWarning, match="states no pixel spacing"):
        _, report = upscale_with_safeguards(bare, 2, "bicubic", maps=False, tta=False)
    assert any("no pixel spacing" in w for w in report["warnings"])
    _, report = upscale_with_safeguards(
        medsr.load_image(corpus_path("CT_small.dcm")), 2, "bicubic", maps=False, tta=False
    )
    assert not any("no pixel spacing" in w for w in report["warnings"])


def test_top_level_api_names_the_shipped_weights_and_upscales_files(tmp_path):
    """What the README's Python block calls: ``medsr.list_pretrained()`` lists the shipped weights
    that ``medsr.list_models()`` (architectures) leaves out, and ``medsr.upscale_file`` is
    ``medsr upscale`` (the safeguarded pipeline) — it was named in the README but missing."""
    assert {"default-x2", "fast-x2", "default-x4"} <= set(medsr.list_pretrained())
    assert "default-x2" not in medsr.list_models()
    out = medsr.upscale_file(corpus_path("MR_small.dcm"), tmp_path / "o.nii.gz", model="bicubic")
    assert out == tmp_path / "o.nii.gz" and medsr.load_image(out).array.shape[-2:] == (128, 128)
    with pytest.raises(medsr.MedSRError, match=r"overwrite=True"):
        medsr.upscale_file(corpus_path("MR_small.dcm"), out, model="bicubic")


@pytest.mark.parametrize(
    ("spacing", "says"),
    [(1e-6, "more than the limit"), (1e-4, "NIfTI-1 axis holds at most 32,767")],
)
def test_an_output_too_large_to_make_or_write_is_refused_before_any_work(tmp_path, spacing, says):
    """A through-plane target spacing of 1e-6 mm asked the allocator for 1.6 TB (a traceback);
    1e-4 mm computed 16 GB, then failed writing a NIfTI of 480,000 slices (a traceback)."""
    import nibabel as nib

    from medsr.errors import InputTooLargeError
    from medsr.pipeline import upscale_file

    src = tmp_path / "thick.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 12), np.float32), np.diag([1, 1, 4, 1])), src)
    with pytest.raises(InputTooLargeError, match=says):
        upscale_file(src, tmp_path / "out.nii.gz", through_plane=True, target_spacing=spacing)
    assert not (tmp_path / "out.nii.gz").exists()


def test_zero_shot_with_shipped_weights_says_what_to_do():
    from medsr.pipeline import check_options

    with pytest.raises(
        InvalidParameterError, match="is shipped weights: fine-tune them with --init default"
    ):
        check_options(method="zero-shot", model="fast-x2", budget_s=10.0)
    with pytest.raises(
        InvalidParameterError, match="is an in-plane model; this needs through-plane"
    ):
        check_options(through_plane=True, model="fast-x2")


def test_degraded_dicom_series_says_it_is_simulated(tmp_path):
    """``medsr degrade`` on a DICOM input wrote a series into the patient's study described
    exactly as an upscaled one ('[medsr]', same SeriesNumber), its derivation only 'degraded:
    ct-detector x2': a simulated acquisition that could pass for the medsr output or a poor
    measured image. Its description and derivation now say it is simulated, not measured."""
    import pydicom

    from medsr.api import degrade_file

    src = corpus_path("CT_small.dcm")
    out = degrade_file(src, tmp_path / "lr", kind="ct-detector", scale=2)
    ds = pydicom.dcmread(next(out.glob("*.dcm")))
    assert ds.SeriesDescription.endswith("[medsr simulated]")
    assert "simulated lower-resolution acquisition, not measured" in ds.DerivationDescription
    assert ds.ImageType[0] == "DERIVED"
    nii = degrade_file(src, tmp_path / "lr.nii.gz", kind="ct-detector", scale=2)
    import nibabel as nib

    assert b"simulated" in nib.load(nii).header["descrip"].item()


def test_nifti_nan_stays_nan_through_plane_in_its_maps_and_is_not_judged(tmp_path):
    """``medsr upscale --through-plane`` of a NIfTI that is NaN outside its data: an output
    slice is NaN where the measured slices on both sides of it are (the slice grid's no-data
    rule; it used to be written as 0), its maps too; the consistency check reads no data as no
    signal (its error there is 0, and the output's no data is not made thick as 0s)."""
    import nibabel as nib

    from medsr.api import upscale_file
    from medsr.pipeline import through_plane_error
    from medsr.slice_grid import no_data_kept
    from tests.conftest import make_nan_nifti

    nonfinite = make_nan_nifti(tmp_path / "in.nii.gz")
    out, maps = tmp_path / "out.nii.gz", tmp_path / "maps"
    upscale_file(tmp_path / "in.nii.gz", out, through_plane=True, maps_dir=maps)
    sr = np.asarray(nib.load(str(out)).dataobj).transpose(2, 1, 0)
    want = no_data_kept(nonfinite, sr.shape[0], 0)
    np.testing.assert_array_equal(np.isnan(sr), want)
    assert 60 <= sr[~want].min() and sr[~want].max() <= 140
    for name in ("consistency", "uncertainty"):
        m = np.asarray(nib.load(str(maps / f"{name}.nii.gz")).dataobj).transpose(2, 1, 0)
        np.testing.assert_array_equal(np.isnan(m), want, err_msg=name)
    image, result = medsr.load_image(tmp_path / "in.nii.gz"), medsr.load_image(out)
    err = through_plane_error(image, result, {"slice_thickness_mm": 4.0, "profile": "gaussian"})
    assert (err[nonfinite] == 0).all()
    assert np.abs(err).max() < 10  # the slice beside the NaN one is not pulled towards 0


def test_nifti_nan_stays_nan_in_a_simulated_acquisition(tmp_path):
    """``medsr degrade`` of a NIfTI that is NaN outside its data: an output voxel is NaN where
    most of the voxels it covers are (it used to be written as 0)."""
    import nibabel as nib

    from medsr.api import degrade_file
    from tests.conftest import make_nan_nifti

    nonfinite = make_nan_nifti(tmp_path / "in.nii.gz")
    out = degrade_file(tmp_path / "in.nii.gz", tmp_path / "lr.nii.gz", kind="bicubic", scale=2)
    lr = np.asarray(nib.load(str(out)).dataobj).transpose(2, 1, 0)
    z, h, w = nonfinite.shape
    want = nonfinite.reshape(z, h // 2, 2, w // 2, 2).mean(axis=(2, 4)) >= 0.5
    np.testing.assert_array_equal(np.isnan(lr), want)
    assert 60 <= lr[~want].min() and lr[~want].max() <= 140


def test_degraded_and_through_plane_nifti_descriptions_state_kind_and_scale(tmp_path):
    """A degraded NIfTI's description said only 'simulated lower-resolution acquisition, not
    measured' — not which degradation nor at which scale — and a through-plane output's said
    'x4.0' where an in-plane one says 'x2'. Both now state them one way."""
    import nibabel as nib
    import pydicom

    from medsr.api import degrade_file
    from medsr.io.nifti import _descrip

    src = corpus_path("MR_small.dcm")
    nii = degrade_file(src, tmp_path / "lr.nii.gz", kind="kspace", scale=2)
    text = nib.load(nii).header["descrip"].item().decode()
    assert text == "medsr derived: simulated kspace x2, not measured"
    out = degrade_file(src, tmp_path / "lr", kind="kspace", scale=2)
    ds = pydicom.dcmread(next(out.glob("*.dcm")))
    assert "not measured (kind kspace, scale x2)" in ds.DerivationDescription
    tp = MedImage(
        np.zeros((4, 2, 2), np.float32), meta={"derivation": {"model": "tp", "scale": 4.0}}
    )
    assert _descrip(tp) == b"medsr derived: tp x4"


def test_through_plane_provenance_states_the_true_factor_along_z():
    """7 slices 2 mm apart made 22 slices (0.6364 mm asked: 0.6364 mm achieved, ×3.1429). The
    provenance record said "scale": 3 (rounded to a whole factor) next to "scale_z": 3.1429;
    now its scale is the factor as it is, and a whole factor stays a whole number. In-plane
    records keep their integer scale."""
    from medsr.pipeline import upscale_through_plane

    zz, yy, xx = np.mgrid[:7, :20, :20]
    arr = (100 + 40 * np.sin(yy / 3.0 + zz / 1.3) * np.cos(xx / 4.0)).astype(np.float32)
    image = MedImage(arr, spacing=(2.0, 0.8, 0.8), modality="MR")
    result, _ = upscale_through_plane(image, target_spacing=0.6364, progress=False)
    record = result.meta["provenance"]
    assert result.spatial_shape[0] == 22
    assert record["scale"] == pytest.approx(22 / 7, abs=1e-4) == record["scale_z"]
    result, _ = upscale_through_plane(image, target_spacing=1.0, progress=False)
    record = result.meta["provenance"]
    assert record["scale"] == 2 and isinstance(record["scale"], int)
    assert record["scale_z"] == 2


def test_consistency_and_uncertainty_statistics_are_over_the_pixels_that_hold_data():
    """A head CT's fill (a fifth of its pixels) holds no data: its consistency error is 0 by
    construction and its output is kept exact. Counted as agreement, those zeros diluted the
    mean, p99 and PSNR that the warning is judged on (session 29); now the statistics are over
    the pixels that hold data, and say so."""
    from medsr.io.padding import block_mask, no_data_mask
    from medsr.safeguards import consistency_error
    from medsr.safeguards.operators import resolve_measurement

    ct = medsr.load_image(corpus_path("J2K_pixelrep_mismatch.dcm"))
    img = ct.replace(array=np.ascontiguousarray(ct.array[:, ::4, ::4]))  # 128², its fill kept
    pad = no_data_mask(img)[0]
    assert 0.1 < pad.mean() < 0.5
    sr, summary = upscale_with_safeguards(img, 2, "fast-x2", warn=False, ood=False)
    meas = resolve_measurement(summary["degradation"]["kind"], 2, img.modality)
    err = np.abs(consistency_error(sr, img, meas, 2))
    cons = summary["consistency"]
    assert cons["over"] == f"the {int((~pad).sum())} input pixels that hold data"
    assert cons["error"]["mean"] == pytest.approx(float(err[~pad].mean()), rel=1e-4)
    assert cons["error"]["mean"] > 1.1 * float(err.mean())  # the zeros no longer count
    std = sr.meta["maps"]["uncertainty"]
    held = ~block_mask(pad, 2)
    assert summary["uncertainty"]["map"]["mean"] == pytest.approx(float(std[held].mean()), rel=1e-4)


def test_every_front_end_door_refuses_an_output_past_the_ceiling(monkeypatch):
    """The web service, the batch and the PACS bridge upscale through upscale_with_safeguards,
    which computed any output: only ``medsr upscale`` checked its size first."""
    from medsr.errors import InputTooLargeError
    from medsr.pipeline import upscale_with_safeguards

    image = MedImage(np.zeros((1, 60, 50), np.float32), spacing=(1.0, 1.0, 1.0))
    monkeypatch.setenv("MEDSR_MAX_PIXELS", str(60 * 50 * 4))
    sr, _ = upscale_with_safeguards(image, 2, "bicubic", warn=False)  # exactly at the limit
    assert sr.spatial_shape == (1, 120, 100)
    with pytest.raises(InputTooLargeError, match=r"48,000 values \(1 × 240 × 200\)"):
        upscale_with_safeguards(image, 4, "bicubic", warn=False)


def test_the_through_plane_door_refuses_an_output_past_the_ceiling(monkeypatch):
    """``upscale_through_plane`` (the API's through-plane step) computed any output: only its
    front end ``medsr upscale --through-plane`` checked the size first. Now it refuses before
    the prior runs, for a target spacing and for the default (isotropic) one."""
    from medsr.errors import InputTooLargeError
    from medsr.pipeline import upscale_through_plane

    vol = np.random.default_rng(0).normal(100, 5, (6, 20, 20)).astype(np.float32)
    image = MedImage(vol, spacing=(4.0, 1.0, 1.0), modality="MR")
    monkeypatch.setenv("MEDSR_MAX_PIXELS", str(24 * 20 * 20 - 1))
    for target in (1.0, None):
        with pytest.raises(InputTooLargeError, match=r"9,600 values \(24 × 20 × 20\)"):
            upscale_through_plane(image, target_spacing=target, progress=False)


@pytest.mark.parametrize("given", [False, True], ids=["one-pass", "precomputed"])
def test_each_time_point_gets_its_own_detail_checks(given):
    """A series over time (``channels="time"``, as ``--series KEY:all`` or a 4-D NIfTI reads
    it) whose phases' content differs: a smooth one whose `fast-x2` detail fails the full-scale
    check (g 0.03), an edge pattern (3x brighter + 500) whose detail holds up in both checks,
    one of noise whose detail fails the self-check one scale down. Upscaled whole, each phase
    equals that phase upscaled on its own (in one pass, and from a batch's precomputed output,
    scaled after the pass as the test-time augmentation's is): both detail checks decide per
    time point. They fitted one gain over the whole series, where the brightest phase's detail
    weighs most: the noise phase's detail passed the self-check (α 1.12), and the full-scale
    check (g −0.13) drew every phase to lanczos, the edge phase 41 off its own result."""
    from medsr.inference.planes import PlaneUpscaler

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:32, :32]
    smooth = 100 + 40 * np.sin(yy / 6.0) * np.cos(xx / 5.7)
    edges = 100 + 80 * ((yy // 5 + xx // 7) % 2)
    noise = 100 + 30 * rng.normal(0, 1, (32, 32))
    series = np.stack([smooth, 3 * edges + 500, noise])[:, None].astype(np.float32)  # (T,Z,Y,X)
    up = PlaneUpscaler("fast-x2", 2)
    opts = {"maps": False, "tta": False, "ood": False, "warn": False}
    image = MedImage(series, spacing=(2.0, 1.0, 1.0), modality="CT", units="a.u.", channels="time")

    def run(image: MedImage) -> tuple[MedImage, dict]:
        output = up.upscale(image) if given else None
        return upscale_with_safeguards(image, 2, up, output=output, **opts)

    sr, summary = run(image)
    for t in range(3):
        own, _ = run(image.replace(array=series[t], channels=None))
        np.testing.assert_allclose(sr.array[t], own.array, rtol=1e-5, atol=1e-3)
    # what each phase on its own records, one record per time point
    check = summary["self_check"]
    assert [r["applied"] for r in check["time_points"]] == [False, False, True], check
    full = check["full_scale"]
    assert [r.get("applied") for r in full["time_points"]] == [True, False, None], full
    from medsr.safeguards.provenance import summary_text

    assert "self-check alpha -1.76 at time point 3 of 3" in summary_text(summary)


def test_each_time_point_gets_its_own_maps_and_statistics(tmp_path, mr_weights):
    """``medsr upscale cine.nii.gz out.nii.gz --maps maps/`` of a 4-D NIfTI whose phases differ
    in range and noise: each map is 4-D, and each phase's map (consistency, uncertainty, error
    bound) and its records in summary.json (``time_points`` of the uncertainty map, the
    consistency error, the error bound, the OOD check) are those of that phase upscaled on its
    own. The maps were one 3-D map, the mean over the phases (a quiet phase got the noisy
    one's spread), the statistics and the bound's k over the whole series. (The detail checks,
    whose gains scale each phase's spread, are off: a random network's detail is scaled to 0.)"""
    import nibabel as nib

    from medsr.inference.planes import PlaneUpscaler
    from medsr.pipeline import upscale_file
    from medsr.safeguards.maps import _jsonable

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:32, :32]
    base = np.sin(yy / 5.0) * np.cos(xx / 4.3) + ((yy // 6 + xx // 9) % 2)
    series = np.stack(
        [
            100 + 40 * base + rng.normal(0, 1, base.shape),
            900 + 300 * base + rng.normal(0, 30, base.shape),  # brighter, noisier
            20 + 5 * base + rng.normal(0, 3, base.shape),
        ]
    )[:, None].astype(np.float32)  # (T, Z, Y, X)
    affine = np.diag([1.0, 1.0, 3.0, 1.0])
    nib.save(nib.Nifti1Image(series.T, affine), tmp_path / "cine.nii.gz")
    maps = tmp_path / "maps"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        upscale_file(
            tmp_path / "cine.nii.gz", tmp_path / "x2.nii.gz", model=str(mr_weights), scale=2,
            maps_dir=maps, self_check=False,
        )  # fmt: skip
    summary = json.loads((maps / "summary.json").read_text())
    names = ("consistency", "uncertainty", "error_bound")
    whole = {m: medsr.load_image(maps / f"{m}.nii.gz") for m in names}
    for m, image in whole.items():  # NIfTI (X, Y, Z, T): the image's own grid over time
        assert image.channels == "time" and image.array.shape == (3, 1, 64, 64), m
    up = PlaneUpscaler(str(mr_weights), 2)
    spreads = []
    for t in range(3):  # each phase on its own, as its 3-D NIfTI reads
        nib.save(nib.Nifti1Image(series[t].T, affine), tmp_path / f"phase{t}.nii.gz")
        phase = medsr.load_image(tmp_path / f"phase{t}.nii.gz")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            own, alone = upscale_with_safeguards(phase, 2, up, warn=False, self_check=False)
        alone = json.loads(json.dumps(alone, default=_jsonable))
        for m in names:
            np.testing.assert_allclose(whole[m].array[t], own.meta["maps"][m], rtol=1e-6, atol=1e-6)
        spreads.append(float(own.meta["maps"]["uncertainty"].max()))
        assert summary["uncertainty"]["map"]["time_points"][t] == alone["uncertainty"]["map"]
        assert summary["error_bound"]["time_points"][t] == alone["error_bound"]
        assert summary["ood"]["time_points"][t] == alone["ood"]
        each = summary["consistency"]["time_points"][t]
        assert each == {k: v for k, v in alone["consistency"].items() if k in each}
    assert spreads[1] > 5 * max(spreads[0], spreads[2])  # three phases, three maps
    _assert_worst_phase_at_top(summary)


def test_each_time_point_gets_its_own_through_plane_maps_and_statistics(tmp_path):
    """``medsr upscale cine.nii.gz out.nii.gz --through-plane --maps maps/`` of a 4-D NIfTI
    whose phases differ in range and noise: each map is 4-D, and each phase's through-plane
    maps (consistency, uncertainty = half |sagittal - coronal|, error bound with its k
    calibrated one scale down along z) and its records in summary.json (``time_points``) are
    those of that phase upscaled on its own. They were one 3-D map, the mean over the phases
    (a quiet phase got the noisy one's spread and bound), the statistics and k over the whole
    series."""
    import nibabel as nib

    from medsr.pipeline import upscale_file, upscale_through_plane
    from medsr.safeguards.maps import _jsonable

    rng = np.random.default_rng(0)
    zz, yy, xx = np.mgrid[:6, :12, :12]
    base = np.sin(yy / 3.0 + zz / 1.5) * np.cos(xx / 2.7) + ((yy // 5 + xx // 7 + zz) % 2)
    series = np.stack(
        [
            100 + 40 * base + rng.normal(0, 1, base.shape),
            900 + 300 * base + rng.normal(0, 30, base.shape),  # brighter, noisier
            20 + 5 * base + rng.normal(0, 3, base.shape),
        ]
    ).astype(np.float32)  # (T, Z, Y, X); 6 slices of 2 mm: 3 one scale down, the fewest
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    nib.save(nib.Nifti1Image(series.T, affine), tmp_path / "cine.nii.gz")
    maps = tmp_path / "maps"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        upscale_file(
            tmp_path / "cine.nii.gz", tmp_path / "x2.nii.gz", through_plane=True, maps_dir=maps
        )
    summary = json.loads((maps / "summary.json").read_text())
    names = ("consistency", "uncertainty", "error_bound")
    whole = {m: medsr.load_image(maps / f"{m}.nii.gz") for m in names}
    for m, image in whole.items():  # NIfTI (X, Y, Z, T): the output's grid over time
        assert image.channels == "time" and image.array.shape == (3, 12, 12, 12), m
    assert summary["error_bound"]["calibrated"]
    bounds = []
    for t in range(3):  # each phase on its own, as its 3-D NIfTI reads
        nib.save(nib.Nifti1Image(series[t].T, affine), tmp_path / f"phase{t}.nii.gz")
        phase = medsr.load_image(tmp_path / f"phase{t}.nii.gz")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            own, alone = upscale_through_plane(phase, maps=True)
        alone = json.loads(json.dumps(alone, default=_jsonable))
        for m in names:
            np.testing.assert_allclose(
                whole[m].array[t], own.meta["maps"][m], rtol=1e-4, atol=1e-4 * np.ptp(series[t])
            )
        bounds.append(float(own.meta["maps"]["error_bound"].max()))
        _assert_close(summary["uncertainty"]["map"]["time_points"][t], alone["uncertainty"]["map"])
        _assert_close(summary["error_bound"]["time_points"][t], alone["error_bound"])
        each = summary["consistency"]["time_points"][t]
        _assert_close(each, {k: v for k, v in alone["consistency"].items() if k in each})
    assert bounds[2] < bounds[0] < bounds[1]  # three phases, three bounds
    _assert_worst_phase_at_top(summary)


def _assert_worst_phase_at_top(summary: dict) -> None:
    """At the top of each trust-map record of a 3-phase series, the phase whose bound / spread
    / error is widest relative to its range; the phases whose consistency was exceeded listed."""
    for top, p99 in (
        (summary["error_bound"], lambda r: r["map"]["p99_rel"]),
        (summary["uncertainty"]["map"], lambda r: r["p99_rel"]),
        (summary["consistency"], lambda r: r["error"]["p99_rel"]),
    ):
        worst = max(range(3), key=lambda t: p99(top["time_points"][t]))
        assert top["time_point"] == worst
        assert p99(top) == p99(top["time_points"][worst])
    each = summary["consistency"]["time_points"]
    assert summary["consistency"]["exceeded_time_points"] == [
        t for t in range(3) if each[t]["exceeded"]
    ]


def _assert_close(got, want, rel=1e-4):
    """``got == want`` (JSON records), their numbers to ``rel``: a phase run within its series
    goes through the network in other batches than on its own (float rounding)."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), (got, want)
        for k in want:
            _assert_close(got[k], want[k], rel)
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), (got, want)
        for g, w in zip(got, want, strict=True):
            _assert_close(g, w, rel)
    elif isinstance(want, float) and not isinstance(want, bool):
        assert got == pytest.approx(want, rel=rel, abs=1e-6), (got, want)
    else:
        assert got == want


def test_the_through_plane_step_works_out_the_input_no_data_once(monkeypatch):
    """Every step of a through-plane run (the upscale, its consistency check and map, the
    summary, the error bound's calibration and spread) takes the input's no-data mask worked out
    once. Seen: ``medsr upscale --through-plane --maps`` worked it out 7 times for the input
    (a pass over the volume each: the fill of a CT found plane by plane) and twice for the
    calibration's thicker volume; without maps twice. (The outputs are the same: the hashes of
    written files before and after, and the bound tests in tests/selfsup.)"""
    import medsr.io.padding as padding
    import medsr.pipeline as pipeline
    from tests.conftest import padded_ct

    image, _ = padded_ct(24, 24)
    asked: list[MedImage] = []
    real = padding.no_data_mask

    def spy(im):
        asked.append(im)
        return real(im)

    monkeypatch.setattr(padding, "no_data_mask", spy)
    monkeypatch.setattr(pipeline, "no_data_mask", spy)
    sr, summary = pipeline.upscale_through_plane(
        image, target_spacing=1.0, maps=True, slice_thickness=2.0, profile="box",
        progress=False, device="cpu",
    )  # fmt: skip
    assert summary["error_bound"]["calibrated"] and "error_bound" in sr.meta["maps"]
    assert sum(im is image for im in asked) == 1
    assert len(asked) == 2  # and the calibration's thicker volume: once
