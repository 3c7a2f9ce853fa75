"""model.low_band: training through LowBandGuard, bare weights exported, card records the guard."""

from __future__ import annotations

import pytest
import torch

from medsr.errors import InvalidParameterError
from medsr.training.config import LowBandConfig, config_from_dict
from tests.training.conftest import TEST_SR, quick_config, tiny_dict


def test_config():
    d = tiny_dict()
    assert config_from_dict(d).model.low_band is None  # off for old configs
    d["model"]["low_band"] = {"base": "Bicubic", "cutoff": 0.25}
    cfg = config_from_dict(d)
    assert cfg.model.low_band == LowBandConfig("bicubic", 0.25)
    assert cfg.model.low_band.card() == {"base": "bicubic", "cutoff": 0.25}
    assert config_from_dict(cfg.to_dict()).model.low_band == cfg.model.low_band
    d["model"]["low_band"] = "kspace"
    assert config_from_dict(d).model.low_band == LowBandConfig("kspace", 0.5)
    for cutoff in (0.0, 1.5, float("nan")):
        d["model"]["low_band"] = {"cutoff": cutoff}
        with pytest.raises(InvalidParameterError, match="cutoff"):
            config_from_dict(d)
    d["model"]["low_band"] = {"base": "bicubic", "width": 2}
    with pytest.raises(InvalidParameterError, match="unknown key"):
        config_from_dict(d)


def test_base_must_be_an_interpolator(tmp_path):
    from medsr.training.factory import build_task

    cfg = quick_config(tmp_path, model={"low_band": {"base": TEST_SR}})
    with pytest.raises(InvalidParameterError, match="classical interpolator"):
        build_task(cfg)
    cfg = quick_config(tmp_path, model={"low_band": {"base": "no-such-model"}})
    with pytest.raises(InvalidParameterError, match="not an interpolator"):
        build_task(cfg)


def test_guarded_forward_keeps_the_base_low_band(tmp_path):
    from medsr.models.lowband import low_band
    from medsr.models.registry import create_model
    from medsr.training.factory import build_task

    cfg = quick_config(tmp_path, model={"low_band": {"base": "bicubic", "cutoff": 0.5}})
    task = build_task(cfg)
    # state_dict: the bare network (and its EMA copy) only, never a second copy via the guard
    keys = list(task.state_dict())
    assert keys and all(k.startswith(("model.", "ema.")) for k in keys)
    lr = torch.rand(2, 1, 16, 20)
    with torch.no_grad():
        out = task(lr)
        base = create_model("bicubic", scale=2)(lr)
        bare = task.eval_model()(lr)
    torch.testing.assert_close(low_band(out, 2, 0.5), low_band(base, 2, 0.5), atol=1e-5, rtol=0)
    assert float((low_band(bare, 2, 0.5) - low_band(base, 2, 0.5)).abs().max()) > 1e-4
    # what the network adds above the band is untouched
    torch.testing.assert_close(
        out - low_band(out, 2, 0.5), bare - low_band(bare, 2, 0.5), atol=1e-5, rtol=0
    )


def test_training_exports_the_bare_network_with_low_band_in_the_card(tmp_path):
    from safetensors.torch import load_file

    from medsr.models.lowband import LowBandGuard
    from medsr.models.registry import create_model
    from medsr.models.weights import read_card
    from medsr.training.run import export, train

    cfg = quick_config(
        tmp_path,
        model={"low_band": {"base": "bicubic", "cutoff": 0.5}},
        data={"patches_per_epoch": 16, "batch_size": 8},
        trainer={"max_epochs": 1},
    )
    result = train(cfg)
    assert result.global_step == 2
    out = export(result.last_checkpoint, tmp_path / "lb.safetensors")
    card = read_card(out)
    assert card["low_band"] == {"base": "bicubic", "cutoff": 0.5}
    net = create_model(card["architecture"], **card["kwargs"])
    net.load_state_dict(load_file(str(out)), strict=True)  # the bare architecture
    # the exported weights behind the same guard reproduce the task's validation forward
    guard = LowBandGuard(net, create_model("bicubic", scale=2), 2, 0.5).eval()
    lr = torch.rand(1, 1, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(guard(lr), result.task.eval()(lr), atol=1e-5, rtol=0)
    # a run without the guard records none
    plain = quick_config(
        tmp_path / "plain",
        data={"patches_per_epoch": 8, "batch_size": 8},
        trainer={"max_epochs": 1},
    )
    r2 = train(plain)
    assert "low_band" not in read_card(export(r2.last_checkpoint, tmp_path / "plain.safetensors"))


def test_distillation_through_the_guard(tmp_path):
    """With model.low_band a student learns the teacher's detail over the base: both pass through
    the guard in the loss, validation scores the guarded student, the card records the guard."""
    from medsr.models.lowband import low_band
    from medsr.models.registry import create_model
    from medsr.models.weights import read_card
    from tests.training.test_distill import distill_config, make_teacher

    teacher_path = tmp_path / "teacher.safetensors"
    make_teacher(teacher_path)
    cfg = distill_config(tmp_path, teacher_path)
    d = cfg.to_dict()
    d["model"]["low_band"] = {"base": "bicubic", "cutoff": 0.5}
    cfg = config_from_dict(d)
    from medsr.training.factory import build_task

    task = build_task(cfg)
    lr = torch.rand(2, 1, 16, 20)
    with torch.no_grad():
        out = task(lr)
        base = create_model("bicubic", scale=2)(lr)
        teacher = task.guarded(task.teacher)(lr)
    torch.testing.assert_close(low_band(out, 2, 0.5), low_band(base, 2, 0.5), atol=1e-5, rtol=0)
    torch.testing.assert_close(low_band(teacher, 2, 0.5), low_band(base, 2, 0.5), atol=1e-5, rtol=0)
    # the loss sees the guarded student: its distillation term is the guarded outputs' L1
    batch = {"lr": lr, "hr": torch.rand(2, 1, 32, 40)}
    task.distill_cfg = type(task.distill_cfg)(
        teacher=str(teacher_path), output_weight=1.0, gt_weight=0.0, feature_weight=0.0
    )
    task.pairs = []
    task.log = lambda *a, **k: None
    with torch.no_grad():
        loss = task.training_step(batch, 0)
        expect = torch.nn.functional.l1_loss(task.guarded(task.model)(lr), teacher)
    torch.testing.assert_close(loss, expect, atol=1e-6, rtol=1e-5)

    from medsr.training.run import export, train

    result = train(cfg)
    card = read_card(export(result.last_checkpoint, tmp_path / "s.safetensors"))
    assert card["low_band"] == {"base": "bicubic", "cutoff": 0.5}
    assert card["distill"]["teacher"] == "teacher.safetensors"


def test_through_plane_refuses_low_band():
    d = tiny_dict()
    d["task"] = "through-plane"
    d["model"]["low_band"] = {"base": "bicubic"}
    with pytest.raises(InvalidParameterError, match="low_band"):
        config_from_dict(d)


def test_card_names_the_validation_baseline_of_a_kspace_guard():
    """A model validated over zero-filled k-space says so in its card (its ``*_bicubic``
    metrics hold that baseline's scores); a bicubic guard's card is as before."""
    from medsr.training.run import build_card

    info = {"name": "m", "architecture": "rlfn", "kwargs": {}, "scale": 2,
            "metrics": {"psnr": 30.0, "psnr_bicubic": 29.0, "psnr_gain": 1.0}}  # fmt: skip
    kspace = build_card(
        {**info, "low_band": {"base": "kspace", "cutoff": 0.5}},
        global_step=1,
        epoch=0,
        weights="ema",
    )
    assert (
        kspace["metrics"]["baseline"] == "kspace"
        and "kspace baseline" in kspace["metrics"]["units"]
    )
    plain = build_card(
        {**info, "low_band": {"base": "bicubic", "cutoff": 0.5}},
        global_step=1,
        epoch=0,
        weights="ema",
    )
    assert "baseline" not in plain["metrics"]
