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


def _measured(img: torch.Tensor, scale: int) -> torch.Tensor:
    return kspace_truncate(img.double(), scale, output="complex")


@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 2**31 - 1),
    h=st.integers(3, 24),
    w=st.integers(3, 24),
    scale=st.sampled_from([2, 3, 4]),
    span=st.sampled_from([1.0, 1000.0, 30000.0]),
    offset=st.sampled_from([0.0, -1024.0, 30000.0]),
)
@example(seed=0, h=8, w=8, scale=2, span=1.0, offset=0.0)  # even sizes: the Nyquist line
@example(seed=1, h=7, w=9, scale=3, span=30000.0, offset=-1024.0)
def test_the_step_keeps_exactly_what_the_input_measured(seed, h, w, scale, span, offset):
    """One step makes the output's measured k-space block the input's, even with the even-size
    Nyquist line; it is a projection (a second step changes nothing); it changes nothing
    outside the measured block; and affine intensity changes commute with it."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(2, 1, h, w, generator=g, dtype=torch.float64) * span + offset)
    pred = torch.rand(2, 1, h * scale, w * scale, generator=g, dtype=torch.float64) * span + offset
    out = keep_measured_kspace(pred, x, scale)
    tol = 1e-9 * (span + abs(offset))
    assert float((_measured(out, scale) - x).abs().max()) <= tol
    assert float((keep_measured_kspace(out, x, scale) - out).abs().max()) <= tol
    # a change of the prediction inside the measured band only leaves the output as it was
    z = torch.rand(2, 1, h, w, generator=g, dtype=torch.float64) * span
    inside = kspace_upsample(z, scale, output="real")
    assert float((keep_measured_kspace(pred + inside, x, scale) - out).abs().max()) <= 10 * tol
    a, b = -2.5, 123.0
    torch.testing.assert_close(keep_measured_kspace(a * pred + b, a * x + b, scale), a * out + b,
                               atol=10 * abs(a) * tol, rtol=0)  # fmt: skip


def test_fp32_and_autocast_keep_the_step_in_full_precision():
    x = torch.rand(1, 1, 16, 16) * 3000 - 1000
    pred = torch.rand(1, 1, 32, 32) * 3000 - 1000
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = keep_measured_kspace(pred, x, 2)
    assert out.dtype == torch.float32
    assert float((_measured(out, 2) - x).abs().max()) < 1e-6 * 3000


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
    runs the exported weights through it, so the output agrees with the input in k-space even
    with --consistency off."""
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
    lr = torch.rand(2, 1, 12, 10)
    with torch.no_grad():
        out = task(lr)
    assert float((_measured(out, 2) - lr.double()).abs().max()) < 1e-5
    assert isinstance(task.guarded(task.model), KSpaceConsistencyGuard)

    result = train(cfg)
    weights = export(result.last_checkpoint, tmp_path / "dc.safetensors")
    assert read_card(weights)["data_consistency"] == "kspace"
    rng = np.random.default_rng(0)
    image = MedImage(rng.normal(600, 150, (2, 24, 20)).astype(np.float32), modality="MR")
    up = PlaneUpscaler(str(weights), 2, device="cpu", base="kspace")
    sr = up.upscale(image)
    got = kspace_truncate(torch.from_numpy(sr.array[:, None].astype(np.float64)), 2, output="real")
    # clipped to the input's range afterwards: agreement to the clip's reach, not to rounding
    err = float(np.abs(got[:, 0].numpy() - image.array).max())
    assert err < 0.05 * float(np.ptp(image.array)), err
    assert "data_consistency" in sr.meta["derivation"]
    # the same weights with the step removed from the card: the output no longer agrees
    plain = PlaneUpscaler(str(weights), 2, device="cpu", base="kspace")
    plain.loaded.card.pop("data_consistency")
    raw = plain.upscale(image).array
    got_raw = kspace_truncate(torch.from_numpy(raw[:, None].astype(np.float64)), 2, output="real")
    assert float(np.abs(got_raw[:, 0].numpy() - image.array).max()) > err
