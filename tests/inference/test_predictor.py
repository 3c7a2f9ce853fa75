"""upscale(): slice-wise application, channels, units, clipping, derivation record."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import medsr
from medsr.errors import InvalidParameterError
from medsr.image import MedImage
from medsr.models.classical import Bicubic
from medsr.models.weights import save_model


def test_volume_slice_wise_matches_per_slice(rng):
    vol = rng.normal(size=(3, 10, 12)).astype(np.float32)
    img = MedImage(vol, spacing=(4.0, 1.0, 1.0), modality="MR")
    sr = medsr.upscale(img, scale=2, model="bicubic", clip=False, batch_size=2)
    ref = Bicubic(scale=2)(torch.from_numpy(vol)[:, None])[:, 0].numpy()
    np.testing.assert_allclose(sr.array, ref, atol=1e-5)
    assert sr.spacing == (4.0, 0.5, 0.5)
    assert sr.meta["derivation"] == {
        "method": "interpolation",
        "model": "bicubic",
        "scale": 2,
        "axes": "in-plane",
        "model_version": None,
        "model_checksum": "classical:bicubic",
        "precision": "fp32",
    }
    assert sr.history[-1].startswith("in-plane upscale x2")


def test_clip_keeps_input_range():
    step = np.zeros((1, 16, 16), np.float32)
    step[:, :, 8:] = 1000.0
    sr = medsr.upscale(MedImage(step, modality="CT", units="HU"), scale=4, model="lanczos")
    assert sr.array.min() >= 0 and sr.array.max() <= 1000
    assert sr.units == "HU" and sr.modality == "CT"


def test_colour_and_time_channels(rng):
    rgb = MedImage(rng.uniform(0, 255, (3, 1, 8, 8)), channels="RGB")
    assert medsr.upscale(rgb, scale=3).array.shape == (3, 1, 24, 24)
    t = MedImage(rng.uniform(0, 1, (4, 2, 8, 8)), channels="time")
    assert medsr.upscale(t, scale=2).array.shape == (4, 2, 16, 16)


def test_weights_file_scale_must_match(tmp_path):
    path = save_model(
        Bicubic(scale=2),
        tmp_path / "b.safetensors",
        {"architecture": "bicubic", "kwargs": {"scale": 2}, "scale": 2},
    )
    img = MedImage(np.ones((1, 4, 4)))
    assert medsr.upscale(img, scale=2, model=str(path)).spatial_shape == (1, 8, 8)
    with pytest.raises(InvalidParameterError, match=r"weights 'b' were trained for ×2, not ×4"):
        medsr.upscale(img, scale=4, model=str(path))
    with pytest.raises(
        InvalidParameterError, match=r"shipped model 'default-x4' was trained for ×4, not ×2"
    ):
        medsr.upscale(img, scale=2, model="default-x4")


def test_bad_scale_and_device():
    img = MedImage(np.ones((1, 4, 4)))
    with pytest.raises(InvalidParameterError):
        medsr.upscale(img, scale=5)
    with pytest.raises(InvalidParameterError):
        medsr.upscale(img, scale=2, device="tpu")


def test_bf16_autocast_stays_close_to_fp32(corpus):
    """``precision="bf16"`` (the fast CPU/GPU path) changes a shipped model's CT output by a
    fraction of the HU range and says so in the derivation record."""
    img = medsr.load_image(corpus("CT_small.dcm"))
    ref = medsr.upscale(img, scale=2, model="fast-x2")
    low = medsr.upscale(img, scale=2, model="fast-x2", precision="bf16")
    assert low.meta["derivation"]["precision"] == "bf16"
    assert ref.meta["derivation"]["precision"] == "fp32"
    diff = np.abs(low.array - ref.array)
    span = float(img.array.max() - img.array.min())
    assert 0 < diff.max() < 0.01 * span  # bf16 is really used, and stays close
    assert np.sqrt(np.mean(diff**2)) < 1e-3 * span


def test_precision_is_checked():
    img = MedImage(np.ones((1, 4, 4)))
    with pytest.raises(InvalidParameterError, match="precision must be one of"):
        medsr.upscale(img, scale=2, precision="int8")
    with pytest.raises(InvalidParameterError, match="CUDA"):
        medsr.upscale(img, scale=2, precision="fp16", device="cpu")


def test_ensemble_is_the_mean_of_the_eight_turned_back_passes(rng):
    """``medsr.upscale(..., ensemble=True)`` — the plain API's self-ensemble — is the mean of the
    shipped model's outputs for the 8 flips/rotations of a non-square volume, each turned back,
    and says so; an interpolator runs once (it commutes with the transforms)."""
    from medsr.inference.ensemble import DIHEDRAL, dihedral, dihedral_inverse

    img = MedImage(
        rng.uniform(0, 400, (2, 24, 30)).astype(np.float32), spacing=(2.0, 0.8, 0.8), modality="MR"
    )
    out = medsr.upscale(img, scale=2, model="fast-x2", ensemble=True)
    turned = [
        dihedral_inverse(
            medsr.upscale(
                img.replace(array=np.ascontiguousarray(dihedral(img.array, k, f))), 2, "fast-x2"
            ).array,
            k,
            f,
        )
        for k, f in DIHEDRAL
    ]
    np.testing.assert_allclose(out.array, np.mean(turned, axis=0), rtol=0, atol=2e-3)
    plain = medsr.upscale(img, scale=2, model="fast-x2")
    assert float(np.abs(out.array - plain.array).max()) > 0.05  # not the one pass
    assert out.spacing == plain.spacing and out.units == plain.units
    assert out.meta["derivation"]["ensemble"] == "mean of 8 flips/90-degree rotations"
    assert out.history[-1] == "self-ensemble: mean of 8 flips/90-degree rotations"
    bic = medsr.upscale(img, scale=2, model="bicubic", ensemble=True)
    assert "ensemble" not in bic.meta["derivation"]
    np.testing.assert_array_equal(bic.array, medsr.upscale(img, scale=2, model="bicubic").array)
