"""Tiled inference matches whole-image inference to within 1e-3 of the data range."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import medsr
from medsr.image import MedImage
from medsr.inference.tiling import core_weight_map, tiled_forward
from medsr.models import create_model


@pytest.mark.parametrize("name", ["residual5", "edsr", "rlfn", "lanczos"])
@pytest.mark.parametrize("shape", [(150, 171), (97, 260)])
def test_tiled_equals_whole(name, shape):
    torch.manual_seed(0)
    kwargs = {} if name == "lanczos" else {"num_features": 16, "num_blocks": 2}
    net = create_model(name, scale=2, **kwargs).eval()
    x = torch.rand(1, 1, *shape)
    with torch.no_grad():
        whole = net(x)
        tiled = tiled_forward(net, x, tile=64, halo=12)
    assert tiled.shape == whole.shape
    rng = float(whole.max() - whole.min())
    assert float((tiled - whole).abs().max()) < 1e-3 * rng


def test_weight_map_is_separable_core():
    w = core_weight_map((40, 50), 8)
    assert w[20, 25] == 1 and w[2, 25] == pytest.approx(1e-4) and w[2, 2] == pytest.approx(1e-8)


def test_upscale_tile_option_same_result(rng):
    img = MedImage(rng.normal(size=(2, 90, 130)).astype(np.float32))
    a = medsr.upscale(img, scale=3, model="bicubic", tile=None)
    b = medsr.upscale(img, scale=3, model="bicubic", tile=48)
    np.testing.assert_allclose(a.array, b.array, atol=1e-3 * float(np.ptp(a.array)))


@pytest.mark.parametrize("n", [65, 100, 150, 171, 260, 479, 640, 1760, 2000])
@pytest.mark.parametrize("tile", [64, 512])
def test_tiles_split_the_image_evenly(n, tile):
    """The fewest equal tiles of at most ``tile`` px that cover ``n`` with the overlap the halo
    needs — and MONAI places exactly that many (counted through the predictor)."""
    from medsr.inference.tiling import tile_sizes

    ov = 2 * 12 + 8
    size, count = tile_sizes(n, tile, ov)
    if n <= tile:
        assert (size, count) == (n, 1)
        return
    assert size <= tile and count * size - (count - 1) * ov >= n  # covers the image
    assert (count - 1) * size - (count - 2) * ov < n  # one tile fewer would not
    seen: list[tuple[int, int]] = []

    def net(t: torch.Tensor) -> torch.Tensor:  # called with a batch of windows
        seen.extend([tuple(t.shape[-2:])] * t.shape[0])
        return t

    x = torch.rand(1, 1, 40, n)
    y = tiled_forward(net, x, tile=tile, halo=12)
    torch.testing.assert_close(y, x)
    assert len(seen) == count and all(s == (40, size) for s in seen)
