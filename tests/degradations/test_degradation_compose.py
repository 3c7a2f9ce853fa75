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
