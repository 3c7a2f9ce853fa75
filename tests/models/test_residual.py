"""Networks that are a bicubic base plus a learned residual say so, and their residual is exact."""

from __future__ import annotations

import pytest
import torch

from medsr.models.blocks import bicubic_upsample, full_precision
from medsr.models.registry import create_model


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("rlfn", {"global_residual": True, "num_features": 8, "num_blocks": 1}),
        ("vdsr", {"num_features": 8, "num_blocks": 3}),
        ("residual5", {"num_features": 8}),
    ],
)
def test_forward_is_bicubic_plus_detail(name, kwargs):
    torch.manual_seed(0)
    net = create_model(name, scale=2, **kwargs).eval()
    for p in net.parameters():  # zero-initialised tails would make the residual trivially 0
        torch.nn.init.normal_(p, std=0.1)
    x = torch.rand(2, 1, 12, 10)
    up = bicubic_upsample(x, 2)
    with torch.no_grad():
        assert net.residual_base == "bicubic"
        assert torch.equal(net(x), up + net.detail(x, up))
        assert torch.equal(net.detail(x), net.detail(x, up))
        assert float(net.detail(x).abs().max()) > 0


def test_only_global_residual_rlfn_has_a_residual_base():
    assert create_model("rlfn", scale=2, num_features=8, num_blocks=1).residual_base is None
    assert not hasattr(create_model("srcnn", scale=2), "detail")


def test_full_precision_layer_under_autocast():
    layer = torch.nn.Conv2d(1, 2, 3, padding=1)
    x = torch.rand(1, 1, 8, 8)
    assert torch.equal(full_precision(layer, x), layer(x))  # no autocast: the layer as it is
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert layer(x).dtype == torch.bfloat16
        y = full_precision(layer, x)
    assert y.dtype == torch.float32
    assert torch.allclose(y, layer(x), atol=1e-6)
