"""Distillation: student built by compression factors, feature adapters, report JSON."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from medsr.errors import InvalidParameterError
from medsr.models.weights import save_model
from medsr.training.distill import DistillTask, compress_kwargs, count_parameters, feature_layers
from medsr.training.run import export, train
from medsr.training.tasks import build_network
from tests.training.conftest import TEST_SR, quick_config


def make_teacher(path, normalization=None):
    net, kwargs = build_network(TEST_SR, {"num_features": 16, "num_blocks": 4}, 2)
    card = {
        "architecture": TEST_SR,
        "kwargs": kwargs,
        "scale": 2,
        "normalization": normalization or {"kind": "minmax"},
    }
    save_model(net, path, card)
    return net


def distill_config(tmp_path, teacher, **distill):
    return quick_config(
        tmp_path,
        task="distill",
        model={"name": "", "kwargs": {}},
        distill={
            "teacher": str(teacher),
            "width_factor": 0.5,
            "depth_factor": 0.5,
            "report_slice_size": 64,
            **distill,
        },
        trainer={"max_steps": 3, "max_epochs": -1},
    )


def test_compress_kwargs_uses_constructor_defaults():
    assert compress_kwargs(TEST_SR, {"num_features": 16, "num_blocks": 4}, 0.5, 0.5) == {
        "num_features": 8,
        "num_blocks": 2,
    }
    # defaults of the constructor (num_features=8, num_blocks=2) when not given
    assert compress_kwargs(TEST_SR, {}, 0.25, 0.1) == {"num_features": 2, "num_blocks": 1}
    assert (
        compress_kwargs(TEST_SR, {"num_features": 30}, 0.5, 1.0, feature_multiple=4)["num_features"]
        == 16
    )


def test_feature_layers_protocol():
    class WithProtocol(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(1, 2, 1), nn.Conv2d(2, 1, 1)

        def feature_layers(self):
            return [self.a]

    m = WithProtocol()
    assert feature_layers(m) == [m.a]
    net, _ = build_network(TEST_SR, {"num_blocks": 3}, 2)
    assert feature_layers(net) == list(net.body)
    assert feature_layers(nn.Conv2d(1, 1, 1)) == []


def test_distillation_trains_a_smaller_student_and_reports(tmp_path):
    teacher_path = tmp_path / "teacher.safetensors"
    teacher = make_teacher(teacher_path)
    cfg = distill_config(tmp_path, teacher_path)
    result = train(cfg)
    task = result.task
    assert isinstance(task, DistillTask)
    assert result.global_step == 3
    assert task.model_kwargs["num_features"] == 8 and task.model_kwargs["num_blocks"] == 2
    assert count_parameters(task.model) < count_parameters(teacher)
    # feature distillation at matched depths through 1×1 adapters
    assert task.pairs == [(0, 1), (1, 3)]
    assert len(task.adapters) == 2
    assert math.isfinite(float(result.metrics["train/distill_features"]))
    assert math.isfinite(float(result.metrics["train/loss"]))
    # the frozen teacher did not move
    for a, b in zip(task.teacher.parameters(), teacher.parameters(), strict=True):
        assert torch.equal(a.cpu(), b)
    report = json.loads((result.out_dir / "distill_report.json").read_text())
    assert result.report == result.out_dir / "distill_report.json"
    assert report["student"]["params"] < report["teacher"]["params"]
    for who in ("teacher", "student"):
        assert report[who]["ms_per_slice_cpu"] > 0
        assert math.isfinite(report[who]["val_psnr"])
    assert "val_psnr_bicubic" in report["bicubic"]
    # the exported network is the student, not the teacher or the adapters
    out = export(result.last_checkpoint, tmp_path / "student.safetensors")
    from medsr.models.weights import load_model

    net, card = load_model(out)
    assert count_parameters(net) == count_parameters(task.model)
    assert card["distill"]["teacher"] == "teacher.safetensors"


def test_distillation_refuses_a_teacher_with_other_normalisation(tmp_path):
    teacher_path = tmp_path / "teacher.safetensors"
    make_teacher(teacher_path, normalization={"kind": "fixed", "low": -1024.0, "high": 3071.0})
    with pytest.raises(InvalidParameterError, match="normalization"):
        train(distill_config(tmp_path, teacher_path))
    with pytest.raises(InvalidParameterError, match="does not exist"):
        train(distill_config(tmp_path, tmp_path / "missing.safetensors"))


@pytest.mark.parametrize("size", [2, 8])
def test_self_ensemble_teacher_is_the_mean_of_its_transformed_passes(tmp_path, size):
    """teacher_ensemble: the teacher's target is the mean of its outputs over the dihedral
    transforms of the input, each turned back (what `medsr upscale --ensemble` computes)."""
    from medsr.training.config.task_sections import TEACHER_ENSEMBLES

    teacher_path = tmp_path / "teacher.safetensors"
    teacher = make_teacher(teacher_path).eval()
    task = DistillTask(distill_config(tmp_path, teacher_path, teacher_ensemble=size))
    x = torch.rand(2, 1, 12, 10)  # not square: a 90° rotation changes the shape
    with torch.no_grad():
        expected = torch.stack(
            [
                torch.rot90(
                    (lambda y: y.flip(-1) if flip else y)(
                        teacher((lambda z: z.flip(-1) if flip else z)(torch.rot90(x, k, (-2, -1))))
                    ),
                    -k,
                    (-2, -1),
                )
                for k, flip in TEACHER_ENSEMBLES[size]
            ]
        ).mean(0)
        one = teacher(x)
    out = task.teacher_output(x)
    assert out.shape == (2, 1, 24, 20)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    assert (out - one).abs().max() > 1e-4  # the untrained teacher is far from equivariant
    assert DistillTask(distill_config(tmp_path, teacher_path)).teacher_output(x).equal(one)


def test_teacher_ensemble_must_be_1_2_or_8(tmp_path):
    teacher_path = tmp_path / "teacher.safetensors"
    make_teacher(teacher_path)
    for bad in (3, 0, True):
        with pytest.raises(InvalidParameterError, match="teacher_ensemble must be"):
            DistillTask(distill_config(tmp_path, teacher_path, teacher_ensemble=bad))
