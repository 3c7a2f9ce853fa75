"""The one-axis through-plane network: shape contract, gradients, safetensors round trip."""

from __future__ import annotations

import pytest
import torch

from medsr.models import create_model, list_models
from medsr.models.axial import cubic_upsample_axis
from medsr.models.weights import load_model, save_model


def test_listed_apart_from_the_in_plane_zoo():
    assert "residual5-1d" not in list_models()
    assert "residual5-1d" in list_models(kind="interpolator-1d")


@pytest.mark.parametrize("scale", [1, 2, 3, 5])
@pytest.mark.parametrize("axis", [-2, -1])
def test_shape_gradients_and_round_trip(scale, axis, tmp_path):
    torch.manual_seed(0)
    kwargs = {"scale": scale, "axis": axis, "num_features": 8, "num_blocks": 3}
    net = create_model("residual5-1d", **kwargs)
    x = torch.rand(2, 1, 12, 10, requires_grad=True)
    y = net(x)
    assert y.shape == ((2, 1, 12 * scale, 10) if axis == -2 else (2, 1, 12, 10 * scale))
    y.mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in net.parameters())
    path = save_model(
        net,
        tmp_path / "m.safetensors",
        {"architecture": "residual5-1d", "kwargs": kwargs, "scale": scale},
    )
    loaded, _ = load_model(path)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x.detach()), net.eval()(x.detach()))


def test_cubic_axis_upsampling_is_one_dimensional_and_cell_centred():
    x = torch.rand(1, 1, 6, 5)
    y = cubic_upsample_axis(x, 3, -2)
    assert y.shape == (1, 1, 18, 5)
    # a function of the column only stays exactly the same along the other axis
    cols = torch.arange(5.0).expand(1, 1, 6, 5)
    torch.testing.assert_close(
        cubic_upsample_axis(cols, 3, -2), cols[..., :1, :].expand(1, 1, 18, 5)
    )
    # along the upsampled axis it is the registered bicubic model (cell-centred grid)
    rows = torch.rand(6).view(1, 1, 6, 1).expand(1, 1, 6, 4)
    bicubic = create_model("bicubic", scale=2)(rows)[..., ::2]
    torch.testing.assert_close(cubic_upsample_axis(rows, 2, -2), bicubic)
    torch.testing.assert_close(
        cubic_upsample_axis(rows.transpose(-2, -1), 2, -1), bicubic.transpose(-2, -1)
    )
    torch.testing.assert_close(cubic_upsample_axis(x, 1, -2), x)


def test_rejects_bad_arguments():
    for bad in ({"scale": 0}, {"scale": 1.5}, {"axis": 0}, {"out_channels": 3}):
        with pytest.raises(ValueError):
            create_model("residual5-1d", **bad)
