"""Losses: values, gradients, and SSIM identical to the metrics module's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medsr.errors import InvalidParameterError
from medsr.metrics import ssim2d
from medsr.training.losses import (
    PixelCriterion,
    charbonnier_loss,
    discriminator_loss,
    feature_loss,
    generator_adversarial_loss,
    l1_loss,
    l2_loss,
    ssim_loss,
    ssim_torch,
    tv_loss,
)


def test_ssim_matches_the_metrics_module():
    g = torch.Generator().manual_seed(0)
    hr = torch.rand(1, 1, 40, 36, generator=g)
    sr = (hr + 0.1 * torch.randn(1, 1, 40, 36, generator=g)).clamp(0, 1)
    expected = float(ssim2d(sr[0, 0].numpy(), hr[0, 0].numpy(), data_range=1.0)[0])
    assert float(ssim_torch(sr, hr)) == pytest.approx(expected, abs=1e-5)
    assert float(ssim_loss(hr, hr)) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(InvalidParameterError):
        ssim_torch(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8))


def test_pixel_losses_and_gradients():
    x = torch.zeros(2, 1, 16, 16, requires_grad=True)
    y = torch.full((2, 1, 16, 16), 0.5)
    assert float(l1_loss(x, y).detach()) == pytest.approx(0.5)
    assert float(l2_loss(x, y).detach()) == pytest.approx(0.25)
    assert float(charbonnier_loss(x, y, eps=1e-3).detach()) == pytest.approx(
        np.sqrt(0.25 + 1e-6), rel=1e-6
    )
    assert float(tv_loss(y)) == 0.0
    crit = PixelCriterion("charbonnier", ssim_weight=0.5, tv_weight=0.1)
    total, parts = crit(x, y)
    assert set(parts) == {"charbonnier", "ssim", "tv"}
    total.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    with pytest.raises(InvalidParameterError):
        PixelCriterion("l3")


@pytest.mark.parametrize("kind", ["vanilla", "relativistic"])
def test_adversarial_losses(kind):
    real = torch.tensor([[3.0], [2.0]])
    fake = torch.tensor([[-3.0], [-2.0]])
    good_d = discriminator_loss(real, fake, kind)
    bad_d = discriminator_loss(fake, real, kind)
    assert 0 <= float(good_d) < float(bad_d)
    # the generator is happy when its output looks real
    assert float(generator_adversarial_loss(real, real + 5, kind)) < float(
        generator_adversarial_loss(real, fake, kind)
    )
    with pytest.raises(InvalidParameterError):
        discriminator_loss(real, fake, "wasserstein")


def test_feature_loss():
    a = [torch.ones(1, 2, 4, 4), torch.zeros(1, 3, 2, 2)]
    b = [torch.zeros(1, 2, 4, 4), torch.zeros(1, 3, 2, 2)]
    assert float(feature_loss(a, b)) == pytest.approx(0.5)
    with pytest.raises(InvalidParameterError):
        feature_loss(a, b[:1])
