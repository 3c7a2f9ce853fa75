"""The HR-less pyramid and the seeded, aligned patch sampler."""

from __future__ import annotations

import pytest
import torch

from medsr.degradations import bicubic_downscale, pyramid_blur_sigma
from medsr.errors import InvalidParameterError
from medsr.selfsup import PatchSampler, build_pyramid


@pytest.mark.parametrize("scale", [2, 3])
def test_pyramid_shapes_and_default_blur(scale):
    x = torch.rand(3, 1, 37, 50)
    very_lr, lr = build_pyramid(x, scale)
    assert very_lr.shape == (3, 1, 37 // scale, 50 // scale)
    assert lr.shape == (3, 1, 37 // scale * scale, 50 // scale * scale)
    torch.testing.assert_close(lr, x[..., : lr.shape[-2], : lr.shape[-1]])
    expected = bicubic_downscale(lr, scale, blur_sigma=pyramid_blur_sigma(scale))
    torch.testing.assert_close(very_lr, expected)
    plain, _ = build_pyramid(x, scale, blur_sigma=0.0)
    torch.testing.assert_close(plain, bicubic_downscale(lr, scale))


def test_pyramid_other_degradations():
    x = torch.rand(2, 1, 32, 32)
    lo, hi = build_pyramid(x, 2, degradation="kspace")
    assert lo.shape == (2, 1, 16, 16) and hi.shape == (2, 1, 32, 32)
    for bad in ("thick-slice", "ultrasound"):  # not an in-plane ×f on both axes
        with pytest.raises(InvalidParameterError):
            build_pyramid(x, 2, degradation=bad)
    with pytest.raises(InvalidParameterError):
        build_pyramid(x, 2, params={"sigma": 1})


def _nearest_pairs(scale, shapes, seed=0):
    """(low, high) pairs where high is low replicated ×scale: any misalignment shows."""
    g = torch.Generator().manual_seed(seed)
    sy, sx = (scale, scale) if isinstance(scale, int) else scale
    pairs = []
    for h, w in shapes:
        lo = torch.rand(1, h, w, generator=g)
        hi = lo.repeat_interleave(sy, dim=-2).repeat_interleave(sx, dim=-1)
        pairs.append((lo, hi))
    return pairs


@pytest.mark.parametrize("scale", [2, 3, (4, 1)])
def test_sampler_keeps_pairs_aligned_under_augmentation(scale):
    sampler = PatchSampler(
        _nearest_pairs(scale, [(12, 14), (9, 20)]),
        scale,
        patch_size=8,
        patches_per_epoch=64,
        seed=3,
    )
    sy, sx = (scale, scale) if isinstance(scale, int) else scale
    seen = 0
    for low, high in sampler.batches(0, batch_size=16):
        assert high.shape[-2:] == (sampler.patch_size, sampler.patch_size)
        assert low.shape[-2:] == (sampler.patch_size // sy, sampler.patch_size // sx)
        rebuilt = low.repeat_interleave(sy, dim=-2).repeat_interleave(sx, dim=-1)
        torch.testing.assert_close(rebuilt, high)
        seen += low.shape[0]
    assert seen == 64 == len(sampler)


def test_sampler_augments_with_all_dihedral_ops_only_when_isotropic():
    # a plane whose every pixel is distinct: each op gives a different patch of the same content
    lo = torch.arange(16.0).reshape(1, 4, 4)
    hi = lo.repeat_interleave(2, -2).repeat_interleave(2, -1)
    sampler = PatchSampler([(lo, hi)], 2, patch_size=8, patches_per_epoch=200, seed=0)
    low, _ = sampler.sample(200, sampler.generator(0))
    assert len({tuple(p.flatten().tolist()) for p in low}) == 8
    aniso = PatchSampler(
        [(lo, lo.repeat_interleave(2, -2))], (2, 1), patch_size=4, patches_per_epoch=200, seed=0
    )
    low, high = aniso.sample(200, aniso.generator(0))
    assert low.shape[-2:] == (2, 4) and high.shape[-2:] == (4, 4)


def test_sampler_is_deterministic_with_a_seed():
    pairs = _nearest_pairs(2, [(20, 20), (16, 24)])

    def draw(seed, epoch=0):
        s = PatchSampler(pairs, 2, patch_size=8, patches_per_epoch=10, seed=seed)
        return torch.cat([lo.flatten() for lo, _ in s.batches(epoch, 4)])

    torch.testing.assert_close(draw(7), draw(7))
    assert not torch.equal(draw(7), draw(8))
    assert not torch.equal(draw(7, 0), draw(7, 1))


def test_sampler_patch_size_clipped_and_constant_planes_skipped():
    pairs = _nearest_pairs(2, [(5, 7)])
    flat = torch.zeros(1, 10, 10)
    pairs.append((flat, torch.zeros(1, 20, 20)))
    s = PatchSampler(pairs, 2, patch_size=64, patches_per_epoch=4)
    assert s.patch_size == 10 and len(s.pairs) == 1  # smallest plane, multiple of 2; zeros left out
    with pytest.raises(InvalidParameterError, match="too small"):
        PatchSampler(_nearest_pairs(4, [(1, 1)]), 4)
    with pytest.raises(InvalidParameterError):
        PatchSampler(pairs, 2, patches_per_epoch=0)
    with pytest.raises(InvalidParameterError):
        PatchSampler([(torch.rand(1, 4, 4), torch.rand(1, 9, 8))], 2)
