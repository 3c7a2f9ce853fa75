"""Every shipped recipe's architecture trains one step through the task (shrunk for speed)."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from medsr.models.weights import save_model
from medsr.training.config import load_config
from medsr.training.distill import feature_layers
from medsr.training.factory import build_task
from medsr.training.tasks import build_network
from tests.training.conftest import REPO, _registered

ARCHS = ("srcnn", "vdsr", "residual5", "srdensenet", "rdn", "srresnet", "edsr", "rlfn")
SMALL = {"num_features": 8, "num_blocks": 2}


def _one_step(task, hr):
    lr = torch.nn.functional.avg_pool2d(hr, task.scale)
    opt = task.configure_optimizers()["optimizer"]
    before = [p.detach().clone() for p in task.model.parameters()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log without a Trainer
        loss = task.training_step({"lr": lr, "hr": hr, "group": torch.zeros(len(hr))}, 0)
    loss.backward()
    opt.step()
    assert math.isfinite(float(loss.detach()))
    assert any(
        not torch.equal(a, b.detach()) for a, b in zip(before, task.model.parameters(), strict=True)
    )


@pytest.mark.parametrize("arch", ARCHS)
def test_recipe_architecture_trains_one_step(arch):
    if not _registered(arch):
        pytest.skip(f"{arch} is not registered yet")
    cfg = load_config(REPO / "configs" / f"{arch}-x2.yaml")
    d = cfg.to_dict()
    kwargs = {**d["model"]["kwargs"], **SMALL}
    if arch == "srdensenet":
        kwargs["num_layers"] = 2
    if arch == "rdn":
        kwargs["num_layers"] = 2
    cfg = cfg.replace(model={"name": arch, "kwargs": kwargs})
    task = build_task(cfg)
    _one_step(task, torch.rand(2, 1, 32, 32))


def test_srgan_recipe_discriminator():
    if not (_registered("srresnet") and _registered("srgan-discriminator")):
        pytest.skip("srresnet / srgan-discriminator not registered yet")
    cfg = load_config(REPO / "configs" / "srgan.yaml")
    d = cfg.to_dict()
    d["gan"]["generator_init"] = None
    d["gan"]["discriminator"]["kwargs"] = {"num_features": 8}
    cfg = cfg.replace(model={"name": "srresnet", "kwargs": SMALL}, gan=d["gan"])
    task = build_task(cfg)
    feats = task.discriminator.features(torch.rand(2, 1, 32, 32))
    assert len(feats) >= 2
    assert task.discriminator(torch.rand(2, 1, 32, 32)).shape[0] == 2


def test_rlfn_from_rdn_feature_distillation(tmp_path):
    if not (_registered("rdn") and _registered("rlfn")):
        pytest.skip("rdn / rlfn not registered yet")
    teacher, kwargs = build_network("rdn", {"num_features": 8, "num_blocks": 3, "num_layers": 2}, 2)
    path = tmp_path / "rdn.safetensors"
    card = {
        "architecture": "rdn",
        "kwargs": kwargs,
        "scale": 2,
        "normalization": {"kind": "minmax"},
    }
    save_model(teacher, path, card)
    cfg = load_config(REPO / "configs" / "distill-rlfn-from-rdn.yaml")
    cfg = cfg.replace(
        model={"name": "rlfn", "kwargs": {"num_features": 8, "num_blocks": 2}},
        distill={**cfg.to_dict()["distill"], "teacher": str(path)},
    )
    task = build_task(cfg)
    assert len(feature_layers(task.teacher)) == 3 and len(feature_layers(task.model)) == 2
    assert task.pairs == [(0, 1), (1, 2)] and len(task.adapters) == 2
    _one_step(task, torch.rand(2, 1, 32, 32))
