"""model.data_consistency: kspace — training, export and inference through the k-space
data-consistency step (medsr.models.lowband.keep_measured_kspace)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from medsr.degradations.kspace import kspace_truncate, kspace_upsample
from medsr.errors import InvalidParameterError
from medsr.models.lowband import KSpaceConsistencyGuard, keep_measured_kspace
from medsr.training.config import config_from_dict
from tests.training.conftest import TEST_SR, quick_config, tiny_dict

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _residual(img: torch.Tensor, x: torch.Tensor, scale: int) -> float:
    """The largest disagreement of ``img``'s magnitude truncation with the measured ``x``."""
    return float((kspace_truncate(img.double(), scale) - x.double()).abs().max())


@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 2**31 - 1),
    h=st.integers(3, 24),
    w=st.integers(3, 24),
    scale=st.sampled_from([2, 3, 4]),
    span=st.sampled_from([1.0, 1000.0, 30000.0]),
    offset=st.sampled_from([0.0, 100.0, 30000.0]),
)
@example(seed=0, h=8, w=8, scale=2, span=1.0, offset=0.0)  # even sizes: the unpaired Nyquist bin
@example(seed=1, h=7, w=9, scale=3, span=30000.0, offset=100.0)
def test_the_step_makes_the_output_agree_with_what_was_measured(seed, h, w, scale, span, offset):
    """The input is a magnitude measurement of a (smooth) image. One step brings any prediction
    to agree with it (exactly for odd sizes, where the truncation of a real image is real; within
    a quarter of the disagreement before for even ones), leaves an image that already agrees as it
    is, keeps what lies outside the measured block, and commutes with intensity scaling."""
    from scipy.ndimage import gaussian_filter

    g = torch.Generator().manual_seed(seed)
    noise = torch.rand(2, 1, h * scale, w * scale, generator=g, dtype=torch.float64).numpy()
    hr = torch.from_numpy(gaussian_filter(noise, (0, 0, 1.5, 1.5))) * span + offset
    x = kspace_truncate(hr, scale)  # what a scanner stores: the magnitude
    pred = torch.rand(2, 1, h * scale, w * scale, generator=g, dtype=torch.float64) * span + offset
    tol = 1e-9 * (span + offset)
    before = _residual(pred, x, scale)
    out = keep_measured_kspace(pred, x, scale)
    assert _residual(out, x, scale) <= (tol if h % 2 and w % 2 else 0.25 * before)
    torch.testing.assert_close(keep_measured_kspace(hr, x, scale), hr, atol=1e3 * tol, rtol=0)
    torch.testing.assert_close(keep_measured_kspace(7.0 * pred, 7.0 * x, scale), 7.0 * out,
                               atol=7e3 * tol, rtol=0)  # fmt: skip
    if h % 2 and w % 2:  # what the acquisition did not measure passes through
        extra = torch.rand_like(pred) * span
        extra = extra - kspace_upsample(
            kspace_truncate(extra, scale, output="complex"), scale, output="real"
        )
        torch.testing.assert_close(keep_measured_kspace(hr + extra, x, scale), hr + extra,
                                   atol=1e4 * tol, rtol=0)  # fmt: skip


def test_fp32_and_autocast_keep_the_step_in_full_precision():
    x = kspace_truncate(torch.rand(1, 1, 30, 34) * 3000, 2)
    pred = torch.rand(1, 1, 30, 34) * 3000
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = keep_measured_kspace(keep_measured_kspace(pred, x, 2), x, 2)
    assert out.dtype == torch.float32
    assert _residual(out, x, 2) < 1e-5 * 3000


def test_config_names_a_measurement_the_training_data_comes_from():
    d = tiny_dict()
    assert config_from_dict(d).model.data_consistency is None
    d["degradation"] = {"kind": "kspace", "params": {}}
    d["model"]["data_consistency"] = "KSpace"
    cfg = config_from_dict(d)
    assert cfg.model.data_consistency == "kspace"
    assert config_from_dict(cfg.to_dict()).model.data_consistency == "kspace"
    d["model"]["data_consistency"] = "bicubic"
    with pytest.raises(InvalidParameterError, match="data_consistency must be one of kspace"):
        config_from_dict(d)
    d["model"]["data_consistency"] = "kspace"
    d["degradation"] = {"kind": "bicubic", "params": {}}
    with pytest.raises(InvalidParameterError, match=r"degradation\.kind: kspace"):
        config_from_dict(d)


def test_training_through_the_step_exports_it_and_inference_applies_it(tmp_path):
    """The task's forward keeps the measured block; the card records the step; medsr's upscaler
    runs the exported weights through it, so the output agrees with the input in k-space (up to
    the clip to the input's range) without the pipeline's projection."""
    from medsr.image import MedImage
    from medsr.inference.planes import PlaneUpscaler
    from medsr.models.weights import read_card
    from medsr.training.factory import build_task
    from medsr.training.run import export, train

    cfg = quick_config(
        tmp_path,
        model={"name": TEST_SR, "kwargs": {"num_features": 8, "num_blocks": 2},
               "low_band": {"base": "kspace", "cutoff": 0.5}, "data_consistency": "kspace"},
        degradation={"kind": "kspace", "params": {}},
        data={"patches_per_epoch": 16, "batch_size": 8},
        trainer={"max_epochs": 1},
    )  # fmt: skip
    task = build_task(cfg)
    lr = kspace_truncate(torch.rand(2, 1, 26, 22), 2)  # a magnitude measurement, odd sizes: exact
    with torch.no_grad():
        out = task(lr)
    assert _residual(out, lr, 2) < 1e-3
    assert isinstance(task.guarded(task.model), KSpaceConsistencyGuard)

    result = train(cfg)
    weights = export(result.last_checkpoint, tmp_path / "dc.safetensors")
    assert read_card(weights)["data_consistency"] == "kspace"
    rng = np.random.default_rng(0)
    image = MedImage(rng.normal(600, 150, (2, 24, 20)).astype(np.float32), modality="MR")
    up = PlaneUpscaler(str(weights), 2, device="cpu", base="kspace")
    sr = up.upscale(image)
    planes = torch.from_numpy(image.array[:, None].astype(np.float64))
    # clipped to the input's range afterwards: agreement to the clip's reach, not to rounding
    err = _residual(torch.from_numpy(sr.array[:, None]), planes, 2)
    assert err < 0.05 * float(np.ptp(image.array)), err
    assert "data_consistency" in sr.meta["derivation"]
    # the same weights with the step removed from the card: the output no longer agrees
    plain = PlaneUpscaler(str(weights), 2, device="cpu", base="kspace")
    plain.loaded.card.pop("data_consistency")
    raw = plain.upscale(image).array
    assert _residual(torch.from_numpy(raw[:, None]), planes, 2) > 2 * err
