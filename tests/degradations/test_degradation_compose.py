"""Compose and the modality-aware default degradation."""

from __future__ import annotations

import pickle

import pytest
import torch

from medsr.degradations import Compose, RandomBicubic, default_degradation, modality_group
from medsr.degradations.kspace import RandomKSpace
from medsr.errors import InvalidParameterError


def test_compose_applies_in_order():
    x = torch.ones(1, 1, 4, 4)
    add = lambda t: t + 1  # noqa: E731
    mul = lambda t: t * 3  # noqa: E731
    assert float(Compose([add, mul])(x)[0, 0, 0, 0]) == 6.0
    assert float(Compose([mul, add])(x)[0, 0, 0, 0]) == 4.0
    assert len(Compose([add, mul])) == 2


def test_compose_passes_the_generator_along():
    seen = []

    def noisy(t, generator=None):
        seen.append(generator)
        return t + torch.rand(t.shape, generator=generator)

    c = Compose([noisy, lambda t: t * 2, noisy])
    a = c(torch.zeros(1, 1, 4, 4), generator=5)
    b = c(torch.zeros(1, 1, 4, 4), generator=5)
    torch.testing.assert_close(a, b)
    assert seen[0] is seen[1]  # one generator shared by the chain
    with pytest.raises(InvalidParameterError):
        Compose([1])


@pytest.mark.parametrize(
    "modality", ["CT", "MR", "CR", "DX", "MG", "XA", "US", "NM", "PT", "OT", "SC", "mr", "", None]
)
@pytest.mark.parametrize("scale", [2, 3])
def test_default_degradation_for_every_modality(modality, scale, shapes):
    deg = default_degradation(modality, scale)
    y = deg(shapes, generator=0)
    assert y.shape == (4, 1, 64 // scale, 64 // scale)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y, deg(shapes, generator=0))


@pytest.mark.parametrize("modality", ["CT", "MR", "DX", "US", "NM", "OT"])
def test_default_pipelines_pickle_for_dataloader_workers(modality, shapes):
    deg = default_degradation(modality, 2)
    clone = pickle.loads(pickle.dumps(deg))
    torch.testing.assert_close(clone(shapes, generator=1), deg(shapes, generator=1))


def test_default_pipelines_use_the_right_physics():
    assert modality_group("mr") == "MR"
    assert modality_group("DX") == "radiograph"
    assert modality_group("PT") == "NM"
    assert modality_group("XC") == "default"
    assert isinstance(default_degradation("MR", 2)[0], RandomKSpace)
    assert isinstance(default_degradation("OT", 2)[0], RandomBicubic)
    assert len(default_degradation("US", 2)) == 2
    with pytest.raises(InvalidParameterError):
        default_degradation("CT", 0)


def test_one_of_draws_each_pipeline_per_sample_with_its_weight():
    import torch

    from medsr.degradations import OneOf
    from medsr.errors import InvalidParameterError

    x = torch.ones(400, 1, 4, 4)
    mix = OneOf([lambda t: t * 0, lambda t: t * 2], [0.25, 0.75])
    y = mix(x, generator=torch.Generator().manual_seed(0))
    per = y.flatten(1).mean(1)
    assert set(per.tolist()) == {0.0, 2.0}
    assert 0.18 < (per == 0).float().mean().item() < 0.32
    y2 = mix(x, generator=torch.Generator().manual_seed(0))
    assert torch.equal(y, y2)  # deterministic given the generator
    for bad in ([], [1.0, -1.0], [0.0, 0.0]):
        with pytest.raises(InvalidParameterError):
            OneOf([lambda t: t, lambda t: t], bad)


def test_training_default_degradation_mixes_plain_bicubic():
    import torch

    from medsr.degradations import OneOf, RandomBicubic
    from medsr.errors import InvalidParameterError
    from medsr.training.config import DegradationConfig
    from medsr.training.data import build_degradation

    mixed = build_degradation(DegradationConfig("default", {"bicubic_fraction": 0.5}), 2, "MR")
    assert isinstance(mixed, OneOf) and isinstance(mixed.transforms[0], RandomBicubic)
    assert mixed(torch.rand(6, 1, 32, 32), generator=torch.Generator().manual_seed(1)).shape == (
        6,
        1,
        16,
        16,
    )
    assert isinstance(
        build_degradation(DegradationConfig("default", {"bicubic_fraction": 1.0}), 2, "CT"),
        RandomBicubic,
    )
    for bad in ({"bicubic_fraction": 1.5}, {"sigma": 1}):
        with pytest.raises(InvalidParameterError):
            DegradationConfig("default", bad).validate("degradation")
