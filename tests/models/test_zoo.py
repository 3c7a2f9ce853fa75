"""Every registered model, at tiny size: shape, scale, gradients, safetensors round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from medsr.errors import UnknownModelError
from medsr.models import create_model, list_models, register_model
from medsr.models.weights import load_model, read_card, save_model

TINY = {"num_features": 8, "num_blocks": 1}


def _build(name: str, scale: int, channels: int):
    cls_kwargs = {"scale": scale, "in_channels": channels}
    model = create_model(name, **cls_kwargs)
    if getattr(model, "learned", True):
        model = create_model(name, **cls_kwargs, out_channels=channels, **TINY)
    return model


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("channels", [1, 3])
def test_every_model(name, scale, channels, tmp_path):
    torch.manual_seed(0)
    model = _build(name, scale, channels)
    x = torch.rand(2, channels, 12, 10, requires_grad=True)
    y = model(x)
    assert y.shape == (2, channels, 12 * scale, 10 * scale)
    y.mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    params = [p for p in model.parameters() if p.requires_grad]
    assert all(p.grad is not None for p in params)
    kwargs = {"scale": scale, "in_channels": channels}
    if params:
        kwargs.update(out_channels=channels, **TINY)
    path = save_model(
        model, tmp_path / "m.safetensors", {"architecture": name, "kwargs": kwargs, "scale": scale}
    )
    loaded, card = load_model(path)
    assert card["architecture"] == name and read_card(path)["scale"] == scale
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x.detach()), model(x.detach()))


@pytest.mark.parametrize("name", list_models(learned=False))
def test_interpolators_keep_constants(name):
    x = torch.full((1, 1, 9, 7), 3.25)
    y = create_model(name, scale=3)(x)
    torch.testing.assert_close(y, torch.full_like(y, 3.25), atol=1e-5, rtol=0)


@pytest.mark.parametrize("n", [16, 17])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_kspace_exact_for_band_limited(n, scale):
    """Zero-filled k-space interpolation reproduces a band-limited signal on the cell-centred grid."""

    def f(t):
        return np.cos(2 * np.pi * 3 * (t + 0.5) / n) + 0.3 * np.sin(2 * np.pi * 5 * (t + 0.5) / n)

    x = torch.tensor(np.outer(f(np.arange(n)), f(np.arange(n)))[None, None], dtype=torch.float64)
    y = create_model("kspace", scale=scale)(x)[0, 0].numpy()
    t = (np.arange(n * scale) + 0.5) / scale - 0.5
    np.testing.assert_allclose(y, np.outer(f(t), f(t)), atol=1e-9)


def test_lanczos_downscale_is_antialiased():
    """A Nyquist-frequency checkerboard must average to grey when shrunk, not alias."""
    from medsr.models.classical import lanczos_resize

    board = torch.tensor((np.indices((32, 32)).sum(0) % 2).astype(np.float32))[None, None]
    small = lanczos_resize(board, (8, 8))
    inner = small[..., 2:-2, 2:-2]
    assert float(inner.std()) < 0.02 and abs(float(inner.mean()) - 0.5) < 0.02


@settings(max_examples=30, deadline=None)
@given(h=st.integers(1, 40), w=st.integers(1, 40), s=st.integers(2, 4), seed=st.integers(0, 2**16))
def test_lanczos_integer_upscale_is_its_resampling_matrix(h, w, s, seed):
    """The banded ×s upscale (phases of shifted views) applies exactly lanczos_matrix's rows —
    taps, normalisation, replicated edges — at every size, down to one pixel."""
    from medsr.models.classical import lanczos_matrix, lanczos_resize

    x = torch.as_tensor(np.random.default_rng(seed).normal(size=(2, 1, h, w)))
    mh, mw = (torch.as_tensor(lanczos_matrix(n, n * s)) for n in (h, w))
    dense = torch.einsum("ih,nchw,jw->ncij", mh, x, mw)
    np.testing.assert_allclose(lanczos_resize(x, (h * s, w * s)).numpy(), dense.numpy(), atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(
    h=st.integers(1, 40),
    w=st.integers(1, 40),
    s=st.integers(1, 4),
    c=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_bicubic_is_pytorchs_bicubic(h, w, s, c, seed):
    """The polyphase bicubic (two convolutions) is PyTorch's upsample_bicubic2d — Keys a = −0.75,
    cell-centred grid, clamped edges — at every size, scale and channel count."""
    from medsr.models.classical import Bicubic

    x = torch.as_tensor(np.random.default_rng(seed).normal(size=(2, c, h, w)) * 3000)
    ref = torch.nn.functional.interpolate(x, scale_factor=s, mode="bicubic", align_corners=False)
    np.testing.assert_allclose(Bicubic(s)(x).numpy(), ref.numpy(), atol=1e-9)


def test_unknown_model_and_duplicate_registration():
    with pytest.raises(UnknownModelError, match="available"):
        create_model("no-such-net")
    with pytest.raises(ValueError, match="already registered"):
        register_model("bicubic")(type("Other", (torch.nn.Module,), {}))


def test_unknown_model_name_lists_what_a_user_can_name():
    """A mistyped name gets the shipped models (the closest first) and the classical
    interpolators, not bare architectures that have no weights."""
    from medsr.models.resolver import resolve_model, shipped_weights

    with pytest.raises(UnknownModelError) as err:
        resolve_model("default-x3", scale=2)
    msg = str(err.value)
    assert "did you mean 'default-x" in msg
    assert all(name in msg for name in shipped_weights())
    assert "lanczos" in msg and "srresnet" not in msg and "rlfn" not in msg
    with pytest.raises(UnknownModelError, match="unknown model 'zzz'; shipped: "):
        resolve_model("zzz", scale=2)
