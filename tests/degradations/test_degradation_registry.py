"""Registry and degrade_image: geometry of the degraded MedImage."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medsr.degradations import (
    Compose,
    RandomBicubic,
    _registry,
    bicubic_downscale,
    degrade_image,
    get_degradation,
    list_degradations,
    register_degradation,
)
from medsr.errors import InvalidParameterError, MedSRError
from medsr.image import MedImage, affine_from_spacing

NAMES = [
    "bicubic",
    "kspace",
    "ct-sparse-view",
    "ct-detector",
    "ultrasound",
    "thick-slice",
    "radiograph",
    "compose",
    "default",
    "gaussian-noise",
    "rician-noise",
    "poisson-noise",
]


def _image(shape, spacing=(2.0, 0.5, 0.7), modality="OT", seed=0, **kw) -> MedImage:
    arr = np.random.default_rng(seed).random(shape).astype(np.float32)
    affine = affine_from_spacing(spacing, origin=(-10.0, 20.0, 5.0))
    return MedImage(arr, spacing=spacing, affine=affine, modality=modality, **kw)


def test_every_name_is_registered():
    assert set(NAMES) <= set(list_degradations())
    assert list_degradations() == sorted(list_degradations())


def test_get_degradation():
    deg = get_degradation("Bicubic", scale=3, blur_sigma=(0.0, 1.0))
    assert isinstance(deg, RandomBicubic) and deg.scale == 3
    assert isinstance(get_degradation("default", modality="MR", scale=2), Compose)
    with pytest.raises(InvalidParameterError, match="unknown degradation"):
        get_degradation("jpeg")
    with pytest.raises(InvalidParameterError, match="bad parameters"):
        get_degradation("bicubic", sigma=2)


def test_register_a_new_degradation():
    @register_degradation("test-identity")
    class Identity:
        def __init__(self, scale: int = 1):
            self.scale = scale

        def __call__(self, x, generator=None):
            return x

    try:
        assert "test-identity" in list_degradations()
        x = torch.rand(1, 1, 4, 4)
        assert get_degradation("test-identity")(x) is x
        img = _image((1, 8, 8))
        out = degrade_image(img, "test-identity", 1)
        np.testing.assert_array_equal(out.array, img.array)
        with pytest.raises(ValueError):
            register_degradation("test-identity")(type("Other", (), {}))
    finally:
        _registry._REGISTRY.pop("test-identity", None)


@pytest.mark.parametrize("shape", [(3, 64, 66), (3, 65, 63)])
def test_bicubic_geometry(shape):
    img = _image(shape)
    out = degrade_image(img, "bicubic", 2)
    _z, y, x = shape
    assert out.array.shape == (3, y // 2, x // 2)
    assert out.spacing == pytest.approx((2.0, 1.0, 1.4))
    # the field of view of the kept HR pixels: same outer corner at voxel −½
    np.testing.assert_allclose(
        out.world_coordinate((-0.5, -0.5, -0.5)), img.world_coordinate((-0.5, -0.5, -0.5))
    )
    kept_hr_centre = img.world_coordinate(((x // 2 * 2 - 1) / 2, (y // 2 * 2 - 1) / 2, 1.0))
    np.testing.assert_allclose(out.world_center(), kept_hr_centre, atol=1e-9)
    # slice-wise application of the deterministic function
    ref = bicubic_downscale(torch.from_numpy(img.array)[:, None], 2)[:, 0].numpy()
    np.testing.assert_allclose(out.array, ref, atol=1e-6)
    assert out.history[-1].startswith("degraded: bicubic x2")
    assert out.modality == img.modality


def test_thick_slice_geometry():
    img = _image((10, 16, 16), spacing=(1.0, 0.5, 0.5))
    out = degrade_image(img, "thick-slice", 3, profile="box")
    assert out.array.shape == (3, 16, 16)
    assert out.spacing == pytest.approx((3.0, 0.5, 0.5))
    np.testing.assert_allclose(out.array[1], img.array[3:6].mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(out.world_center(), img.world_coordinate((7.5, 7.5, 4.0)))
    # through-plane simulation on an in-plane axis, slice-wise
    flat = degrade_image(img, "thick-slice", 2, axis=-1)
    assert flat.array.shape == (10, 16, 8)
    assert flat.spacing == pytest.approx((1.0, 0.5, 1.0))


def test_ultrasound_geometry():
    img = _image((1, 40, 64), spacing=(1.0, 0.2, 0.3), modality="US")
    out = degrade_image(img, "ultrasound", 4)
    assert out.array.shape == (1, 40, 16)
    assert out.spacing == pytest.approx((1.0, 0.2, 1.2))


def test_kspace_and_ct_kinds():
    mr = _image((2, 32, 32), modality="MR")
    out = degrade_image(mr, "kspace", 2, window="hamming", noise_sigma=0.01, generator=3)
    assert out.array.shape == (2, 16, 16)
    np.testing.assert_array_equal(
        out.array,
        degrade_image(mr, "kspace", 2, window="hamming", noise_sigma=0.01, generator=3).array,
    )
    ct = MedImage(
        np.full((1, 32, 32), -1000.0, np.float32), spacing=(1, 0.8, 0.8), modality="CT", units="HU"
    )
    same = degrade_image(ct, "ct-sparse-view", 1, view_step=4)
    assert same.spacing == ct.spacing and same.units == "HU"
    assert "pixel_size_mm=0.8" in same.history[-1]  # physical pixel size from the spacing
    assert np.abs(same.array + 1000).max() < 1.0
    assert degrade_image(ct, "ct-detector", 2, sigma=0.7).spacing == pytest.approx((1, 1.6, 1.6))


def test_colour_is_processed_per_channel():
    img = _image((3, 1, 32, 32), channels="RGB")
    out = degrade_image(img, "radiograph", 2, sigma=0.8)
    assert out.array.shape == (3, 1, 16, 16) and out.channels == "RGB"
    for c in range(3):
        grey = degrade_image(
            MedImage(img.array[c], spacing=img.spacing), "radiograph", 2, sigma=0.8
        )
        np.testing.assert_allclose(out.array[c], grey.array, atol=1e-6)


@pytest.mark.parametrize("modality", ["CT", "MR", "DX", "US", "NM", "OT"])
def test_default_kind_is_deterministic_given_a_seed(modality):
    img = _image((2, 32, 32), modality=modality)
    a = degrade_image(img, "default", 2, generator=11)
    b = degrade_image(img, "default", 2, generator=11)
    assert a.array.shape == (2, 16, 16)
    assert a.spacing == pytest.approx((2.0, 1.0, 1.4))
    np.testing.assert_array_equal(a.array, b.array)


def test_compose_kind():
    img = _image((1, 32, 32))
    out = degrade_image(img, "compose", 2, transforms=[RandomBicubic(2), lambda t: t * 0 + 1.0])
    assert out.array.shape == (1, 16, 16)
    assert np.all(out.array == 1.0)


def test_bad_requests_raise_medsr_errors():
    img = _image((1, 16, 16))
    with pytest.raises(MedSRError):
        degrade_image(img, "nope", 2)
    with pytest.raises(MedSRError):
        degrade_image(img, "bicubic", 0)
    with pytest.raises(MedSRError):
        degrade_image(img, "bicubic", 2, not_a_param=1)
    with pytest.raises(MedSRError):
        degrade_image(img, "thick-slice", 2)  # a single slice cannot be thickened along z
    with pytest.raises(MedSRError):
        degrade_image(img, "default", 2, sigma=1)
    with pytest.raises(MedSRError):
        degrade_image(img.array, "bicubic", 2)


@pytest.mark.parametrize("kind", ["gaussian-noise", "rician-noise", "poisson-noise", "ct-noise"])
def test_noise_kinds_name_a_missing_or_unknown_parameter(kind):
    """`medsr degrade --kind gaussian-noise` without `--param sigma=` was a TypeError traceback
    from inside the noise function (its wrapper took any keyword, so the check bound nothing)."""
    img = _image((1, 16, 16))
    with pytest.raises(InvalidParameterError, match=f"bad parameters for degradation '{kind}'"):
        degrade_image(img, kind, 1)
    with pytest.raises(InvalidParameterError, match="bad parameters"):
        degrade_image(img, kind, 1, sigma=1.0, peak=1.0, not_a_param=1)


def test_noise_kinds_run_with_their_parameters():
    img = _image((1, 16, 16))
    out = degrade_image(img, "gaussian-noise", 1, generator=0, sigma=0.1)
    assert out.array.shape == (1, 16, 16)
    assert not np.array_equal(out.array, img.array)


def test_noise_alone_is_recorded_as_no_reduction(tmp_path):
    """`medsr degrade in.nii.gz out.nii.gz --kind gaussian-noise --param sigma=5` (the CLI's
    default --scale is 2) recorded "degraded: gaussian-noise x2" and a derivation of scale 2 —
    a simulated ×2 lower-resolution acquisition — for an image on the input's own grid: noise
    alone takes no scale. Now the record states the factor the image was reduced by: 1."""
    import json

    from medsr.api import degrade_file
    from medsr.io import save_image

    img = _image((1, 16, 16))
    out = degrade_image(img, "gaussian-noise", 2, generator=0, sigma=0.1)
    assert out.array.shape == (1, 16, 16) and out.spacing == img.spacing
    assert out.history[-1] == "degraded: gaussian-noise x1 (seed=0, sigma=0.1)"
    src = save_image(img, tmp_path / "in.nii.gz")
    degrade_file(src, tmp_path / "lr.nii.gz", kind="rician-noise", params={"sigma": 0.1})
    side = json.loads((tmp_path / "lr.json").read_text())
    assert side["history"][-1] == "degraded: rician-noise x1 (seed=0, sigma=0.1)"
    assert side["derivation"]["scale"] == 1
    # a reducing kind keeps its factor in both records
    degrade_file(src, tmp_path / "lr2.nii.gz", kind="bicubic")
    side = json.loads((tmp_path / "lr2.json").read_text())
    assert side["history"][-1] == "degraded: bicubic x2" and side["derivation"]["scale"] == 2


# ------------------------------------------------------------------ no data, made as a scanner does
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=25, deadline=None)
@given(
    kind=st.sampled_from(["bicubic", "ct-detector", "kspace", "default", "thick-slice"]),
    scale=st.integers(2, 4),
    fill=st.sampled_from([-3024.0, -2000.0]),
    radius=st.floats(0.3, 0.5),
)
def test_no_data_is_made_again_at_the_new_resolution(kind, scale, fill, radius):
    """A CT's fill outside the scan circle is not signal: degraded, each output pixel is either
    the fill exactly (most of its source block is fill) or made from the measured field alone —
    never a mix (bicubic made values between the fill and tissue at the circle's edge, and
    undershot to −3190 HU; the detector blur left 17 fill pixels of 1,512)."""
    rng = np.random.default_rng(0)
    z, h, w = (2 * scale, 48, 48) if kind == "thick-slice" else (2, 48, 48)
    arr = (200 * rng.standard_normal((z, h, w))).astype(np.float32)
    yy, xx = np.mgrid[:h, :w]
    circle = (yy - h / 2 + 0.5) ** 2 + (xx - w / 2 + 0.5) ** 2 < (radius * h) ** 2
    arr[:, ~circle] = fill
    img = MedImage(arr, spacing=(1.0, 1.0, 1.0), modality="CT", units="HU")
    lr = degrade_image(img, kind, scale, generator=0)
    out = lr.array
    if kind == "thick-slice":  # the fill is the same in every slice: the in-plane mask stays
        want = np.broadcast_to(~circle, out.shape)
    else:
        blocks = (~circle).reshape(h // scale, scale, w // scale, scale).mean(axis=(1, 3)) >= 0.5
        want = np.broadcast_to(blocks, out.shape)
    assert (out[want] == np.float32(fill)).all()
    assert (out[~want] > -1100).all()  # nothing of the fill leaked into the measured pixels


def test_the_noise_seed_is_recorded(tmp_path):
    """A degradation that draws noise records its seed with its parameters (history → sidecar,
    DICOM DerivationDescription, PNG Description): the simulated image can be made again. Before:
    'degraded: ct-sparse-view x2 (i0=100000.0, ...)', no seed, so `medsr degrade --seed 3` and
    `--seed 4` wrote different images with identical records."""
    import json

    from medsr.api import degrade_file
    from medsr.io import save_image

    img = _image((1, 64, 64)).replace(modality="CT", units="HU")
    one = degrade_image(img, "ct-sparse-view", 2, generator=3, i0=1e5)
    assert one.history[-1].endswith(", seed=3)")
    again = degrade_image(img, "ct-sparse-view", 2, generator=3, i0=1e5)
    np.testing.assert_array_equal(one.array, again.array)  # the record reproduces it
    assert "seed" not in degrade_image(img, "bicubic", 2, generator=3).history[-1]  # no noise
    assert "seed" not in degrade_image(img, "kspace", 2, generator=torch.Generator()).history[-1]
    src = save_image(img, tmp_path / "in.nii.gz")
    degrade_file(src, tmp_path / "lr.nii.gz", kind="kspace", seed=4)
    history = json.loads((tmp_path / "lr.json").read_text())["history"]
    assert history[-1] == "degraded: kspace x2 (seed=4)"


def test_a_noise_seed_is_a_whole_number_from_0_to_2_64_minus_1(tmp_path, monkeypatch):
    """``medsr degrade --seed -1`` was accepted and recorded as seed=-1, though torch draws the
    same noise as for 2**64 − 2 (one image, two records); a seed beyond 64 bits ended in torch's
    OverflowError (a traceback, exit 1). Both are one ``error:`` line, exit 2, before the input is
    read and with nothing written."""
    import medsr.api
    from medsr.degradations import check_seed
    from medsr.io import save_image
    from tests.test_cli import medsr as run

    img = _image((1, 32, 32)).replace(modality="CT", units="HU")
    for bad in (-1, 2**64, np.int64(-5)):
        with pytest.raises(InvalidParameterError, match="noise seed must be a whole number from 0"):
            degrade_image(img, "ct-sparse-view", 2, generator=bad, i0=1e5)
    assert check_seed(2**64 - 1) == 2**64 - 1 and check_seed(np.int64(7)) == 7
    src = save_image(img, tmp_path / "in.nii.gz")
    for bad in ("-1", str(2**70)):
        res = run(
            "degrade", str(src), str(tmp_path / "lr.nii.gz"), "--kind", "bicubic", "--seed", bad
        )
        assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
        assert res.stderr.startswith("error: a noise seed must be a whole number from 0")
        assert not (tmp_path / "lr.nii.gz").exists()
    read = []
    monkeypatch.setattr(medsr.api, "load_image", lambda *a, **k: read.append(a))
    with pytest.raises(InvalidParameterError, match="noise seed"):
        medsr.api.degrade_file(src, tmp_path / "lr.nii.gz", kind="bicubic", seed=-1)
    assert not read  # refused before the input was read
