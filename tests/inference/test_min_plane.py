"""Planes smaller than a network's training patches are padded by reflection for the network
(:attr:`medsr.models.resolver.LoadedModel.min_plane`) and the detail cropped back."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import medsr
from medsr.image import MedImage
from medsr.inference.planes import PlaneUpscaler, _pads_to, _reflect_pad
from medsr.models.resolver import resolve_model
from tests.conftest import corpus_path

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@settings(max_examples=60, deadline=None)
@given(
    h=st.integers(1, 9), w=st.integers(1, 9),
    pads=st.tuples(*(st.integers(0, 30) for _ in range(4))),
)  # fmt: skip
def test_reflect_pad_is_numpys_reflect_for_any_length(h, w, pads):
    a = np.arange(h * w, dtype=np.float32).reshape(1, 1, h, w)
    top, bottom, left, right = pads
    got = _reflect_pad(torch.from_numpy(a), ((top, bottom), (left, right)), False).numpy()
    mode = "reflect" if min(h, w) > 1 else "edge"
    if h > 1 and w > 1:
        want = np.pad(a, ((0, 0), (0, 0), (top, bottom), (left, right)), mode=mode)
    else:  # one pixel wide: numpy reflects nothing; it is repeated
        want = a
        for axis, (b, c), n in ((2, (top, bottom), h), (3, (left, right), w)):
            want = np.pad(want, [(0, 0)] * axis + [(b, c)] + [(0, 0)] * (3 - axis),
                          mode="edge" if n == 1 else "reflect")  # fmt: skip
    np.testing.assert_array_equal(got, want)


def test_pads_centre_a_small_plane_and_leave_a_large_one():
    t = torch.zeros(1, 1, 16, 30)
    assert _pads_to(t, 24) == ((4, 4), (0, 0))
    assert _pads_to(t, 33) == ((8, 9), (1, 2))
    assert _pads_to(t, 16) is None and _pads_to(t, 0) is None


def test_min_plane_comes_from_the_training_patch():
    assert resolve_model("default-x4", scale=4).min_plane == 96 // 4
    assert resolve_model("fast-x2", scale=2).min_plane == 64 // 2
    assert resolve_model("bicubic", scale=2).min_plane == 0


def test_a_small_plane_runs_padded_and_cropped():
    """The network's detail on a 16² plane is its detail on the plane reflected out to 24²,
    cropped; planes at least that large are not padded (their output is unchanged)."""
    mr_small = medsr.load_image(corpus_path("MR_small.dcm"))
    up = PlaneUpscaler("default-x4", 4, low_band=False, range_guard=False)
    x = (
        torch.from_numpy(np.ascontiguousarray(mr_small.array[:1, 24:40, 24:40], np.float32))[None]
        / 4000
    )
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        pred, _ = up.forward_tensor(x)
        bic = torch.nn.functional.interpolate(
            x, scale_factor=4, mode="bicubic", align_corners=False
        )
        padded = _reflect_pad(x, ((4, 4), (4, 4)), True)
        want = up.net.detail(padded)[..., 16:80, 16:80] + bic
        torch.testing.assert_close(pred, want, rtol=0, atol=1e-5)
        big = torch.nn.functional.pad(x, (4, 4, 4, 4), mode="reflect").contiguous(
            memory_format=torch.channels_last
        )
        pred_big, _ = up.forward_tensor(big)
        torch.testing.assert_close(pred_big, up.net.detail(big) + torch.nn.functional.interpolate(
            big, scale_factor=4, mode="bicubic", align_corners=False), rtol=0, atol=1e-5)  # fmt: skip


def test_a_small_image_keeps_intensity_equivariance():
    rng = np.random.default_rng(0)
    a = rng.normal(100, 20, (1, 10, 12)).astype(np.float32)
    img = MedImage(a, spacing=(1.0, 1.0, 1.0), modality="MR")
    one = medsr.upscale(img, 2, "fast-x2").array
    two = medsr.upscale(img.replace(array=a * 12 - 3000), 2, "fast-x2").array
    np.testing.assert_allclose(two, one * 12 - 3000, atol=2e-3 * 12 * float(np.ptp(one)))


def test_a_narrow_plane_is_padded_on_the_tiled_path_too():
    """A plane long enough to be tiled but narrower than the training patch: padded across, then
    tiled (the tiles of a fixed-spread RLFN reproduce a whole-plane pass), then cropped."""
    up = PlaneUpscaler("fast-x2", 2, low_band=False, range_guard=False, tile=128)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 1, 20, 1100, generator=g).contiguous(memory_format=torch.channels_last)
    assert up.tile_size is not None and up.tile_size < 1100  # tiled along the long side
    with torch.inference_mode():
        pred, _ = up.forward_tensor(x, tiled=True)
        padded = _reflect_pad(x, ((6, 6), (0, 0)), True)
        bic = torch.nn.functional.interpolate(
            x, scale_factor=2, mode="bicubic", align_corners=False
        )
        want = up.net.detail(padded)[..., 12:52, :] + bic
    assert pred.shape == want.shape == (1, 1, 40, 2200)
    torch.testing.assert_close(pred, want, rtol=0, atol=1e-4)
