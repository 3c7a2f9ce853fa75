"""Adversarial fine-tuning: one batch steps both optimisers with finite losses; warm start."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch

from medsr.errors import InvalidParameterError
from medsr.models.weights import save_model
from medsr.training.data import SRDataModule
from medsr.training.factory import build_task
from medsr.training.tasks import SRGANTask
from tests.training.conftest import TEST_DISC, TEST_SR, quick_config


def gan_config(tmp_path, **gan):
    return quick_config(
        tmp_path,
        task="gan",
        gan={
            "discriminator": {"name": TEST_DISC, "kwargs": {"num_features": 8}},
            "tv_weight": 0.01,
            **gan,
        },
        trainer={"max_steps": 2, "max_epochs": -1, "gradient_clip_val": 1.0},
    )


def _snapshot(module):
    return [p.detach().clone() for p in module.parameters()]


def _changed(before, module):
    return any(
        not torch.equal(a, b.detach()) for a, b in zip(before, module.parameters(), strict=True)
    )


@pytest.mark.parametrize("adversarial", ["vanilla", "relativistic"])
def test_gan_step_updates_generator_and_discriminator(tmp_path, adversarial):
    cfg = gan_config(tmp_path, adversarial=adversarial)
    task = build_task(cfg)
    assert isinstance(task, SRGANTask) and not task.automatic_optimization
    g0, d0 = _snapshot(task.model), _snapshot(task.discriminator)
    dm = SRDataModule(cfg)
    trainer = L.Trainer(
        max_steps=2,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
    )
    trainer.fit(task, datamodule=dm)
    # manual optimisation: one batch = one discriminator + one generator step
    assert trainer.global_step == 2
    assert _changed(g0, task.model) and _changed(d0, task.discriminator)
    for key in (
        "train/loss",
        "train/d_loss",
        "train/adv",
        "train/content",
        "train/pixel",
        "train/tv",
    ):
        assert math.isfinite(float(trainer.callback_metrics[key])), key


def test_gan_warm_start_from_safetensors(tmp_path):
    cfg = gan_config(tmp_path)
    donor = build_task(quick_config(tmp_path))
    with torch.no_grad():
        for p in donor.model.parameters():
            p.add_(0.5)
    weights = tmp_path / "gen.safetensors"
    save_model(
        donor.model, weights, {"architecture": TEST_SR, "kwargs": donor.model_kwargs, "scale": 2}
    )
    task = build_task(cfg.replace(gan={**cfg.to_dict()["gan"], "generator_init": str(weights)}))
    for a, b in zip(task.model.parameters(), donor.model.parameters(), strict=True):
        assert torch.equal(a, b)
    wrong = tmp_path / "wrong.safetensors"
    save_model(donor.model, wrong, {"architecture": "other-net", "kwargs": {}, "scale": 2})
    with pytest.raises(InvalidParameterError, match="not"):
        build_task(cfg.replace(gan={**cfg.to_dict()["gan"], "generator_init": str(wrong)}))


def test_gan_through_train_writes_a_checkpoint(tmp_path):
    from medsr.training.run import export, train

    result = train(gan_config(tmp_path))
    assert result.global_step == 2
    out = export(result.last_checkpoint, tmp_path / "gan.safetensors")
    from medsr.models.weights import read_card

    card = read_card(out)
    assert card["task"] == "gan" and card["gan"]["discriminator"] == TEST_DISC
