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


@pytest.mark.parametrize("align", [1, 6])
@pytest.mark.parametrize("n", [65, 100, 150, 171, 260, 479, 640, 1760, 2000])
@pytest.mark.parametrize("tile", [64, 512])
def test_tiles_split_the_image_evenly(n, tile, align):
    """The fewest equal tiles of at most ``tile`` px that cover ``n`` with the overlap the halo
    needs, starting on the ``align`` grid — and MONAI places exactly those (seen by the
    predictor through its window coordinates)."""
    from medsr.inference.tiling import tile_plan

    ov = 2 * 12 + 8
    size, stride, count = tile_plan(n, tile, ov, align)
    if n <= tile:
        assert (size, count) == (n, 1)
        return
    assert size <= tile and stride <= size - ov and stride % align == 0
    assert (count - 1) * stride + size >= n  # covers the image
    if align == 1:  # the fewest tiles: one fewer of the largest size would not cover it
        assert (count - 2) * (tile - ov) + tile < n
    starts: list[int] = []
    seen: list[int] = []
    x = torch.rand(1, 1, 40, n)

    def net(t: torch.Tensor) -> torch.Tensor:  # called with a batch of windows
        assert tuple(t.shape[-2:]) == (40, size)
        seen.append(t.shape[0])
        return t

    y = tiled_forward(net, x, tile=tile, halo=12, align=align)
    torch.testing.assert_close(y, x)
    assert sum(seen) == count  # the windows MONAI placed, counted by the predictor
    from monai.data.utils import dense_patch_slices
    from monai.inferers.utils import _get_scan_interval

    o = 1 - (stride + 0.5) / size  # the overlap tiled_forward gives MONAI
    interval = _get_scan_interval((40, n), (40, size), 2, (0.0, o))
    for sl in dense_patch_slices((40, n), (40, size), interval):
        starts.append(sl[1].start)
    assert len(starts) == count and all(s0 % align == 0 for s0 in starts)
    assert starts[-1] == n - size


@pytest.mark.parametrize("blocks", [1, 2])
@pytest.mark.parametrize("shape", [(150, 171), (97, 260)])
def test_fixed_spread_rlfn_tiles_equal_the_whole_image(blocks, shape):
    """With its attention spread by a fixed factor, RLFN sees the same grid in a tile as in the
    whole image: tiles on the 6-px grid with its declared reach as halo reproduce one pass up to
    the blending's eps (the stretched attention does not, which the same check shows)."""
    torch.manual_seed(0)
    x = torch.rand(1, 1, *shape)
    for spread, exact in (("fixed", True), ("stretch", False)):
        net = create_model(
            "rlfn", scale=2, num_features=16, num_blocks=blocks, esa_spread=spread
        ).eval()
        for p in net.parameters():  # trained-like: an attention that varies across the image
            p.data.normal_(0, 0.3)
        with torch.no_grad():
            whole = net(x)
            halo = max(16, net.reach or 0)
            tiled = tiled_forward(net, x, tile=halo * 2 + 8 + 60, halo=halo, align=net.tile_align)
        assert tiled.shape == whole.shape
        err = float((tiled - whole).abs().max()) / float(whole.max() - whole.min())
        # exact up to the blending's eps (1e-4) times a tile edge's error; stretched: ~0.4 here
        assert (err < 2e-4) if exact else (err > 1e-2), (spread, err)


def test_tiles_widen_for_a_network_that_looks_far():
    """A tile stays at least 4x its overlap wide: ``default-x2`` (reach 111 LR px) is cut into
    920-px tiles, not 512 (which computed 3x the pixels of a 1760² plane); ``fast-x2`` (reach 57)
    and networks without a declared reach keep the tile asked for; planes up to the widened
    tile run whole."""
    from types import SimpleNamespace

    from medsr.inference.planes import PlaneUpscaler
    from medsr.inference.tiling import DEFAULT_HALO, tile_size_for

    assert tile_size_for(512, DEFAULT_HALO) == 512
    assert tile_size_for(512, 57) == 512
    assert tile_size_for(512, 111) == 4 * (2 * 111 + 8) == 920
    default = PlaneUpscaler("default-x2", 2, device="cpu")
    fast = PlaneUpscaler("fast-x2", 2, device="cpu")
    assert (default.halo, default.tile_size) == (111, 920)
    assert (fast.halo, fast.tile_size) == (57, 512)
    assert PlaneUpscaler("default-x2", 2, device="cpu", tile=None).tile_size is None
    job = SimpleNamespace(planes=np.zeros((1, 1, 600, 800), np.float32))  # an ultrasound frame
    assert not default.needs_tiling(job) and fast.needs_tiling(job)
