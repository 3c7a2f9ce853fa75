"""The per-image training loop of the zero-shot methods: no data is never a target."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medsr.image import MedImage
from medsr.selfsup import PatchSampler, zero_shot_upscale
from medsr.selfsup._fit import build_network, fit
from medsr.selfsup.pyramid import build_pyramid

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _padded_pairs() -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
    """A 32×32 plane whose right half holds no data (read as its darkest value, 0), its ×2
    pyramid pair and that mask."""
    yy, xx = np.mgrid[:32, :32]
    plane = (0.5 + 0.4 * np.sin(yy / 2.0) * np.cos(xx / 3.0)).astype(np.float32)
    no_data = torch.from_numpy(xx >= 16)[None, None]
    plane[xx >= 16] = 0.0
    very_lr, lr = build_pyramid(torch.from_numpy(plane)[None, None], 2)
    return list(zip(very_lr, lr, strict=True)), no_data


def _train(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.nn.Module, float]:
    net, _, _ = build_network("residual5", 2, {"num_features": 8}, None, kind="upscaler", seed=0)
    sampler = PatchSampler(pairs, 2, patch_size=16, patches_per_epoch=16, seed=0)
    report = fit(
        net, sampler, budget_s=None, epochs=1, batch_size=4, lr=1e-3,
        device=torch.device("cpu"), seed=0, progress=False, description="test",
    )  # fmt: skip
    return net, report.final_loss


def test_no_data_pixels_are_no_training_target():
    """Zero-shot in-plane and through-plane adaptation trained on every pixel of their patches,
    the no-data ones too (a CT's padded ring, read as the darkest measured value): the network
    spent its budget learning to output the fill, which the output throws away, and its
    sharp fill-to-tissue step. A target pixel that holds no data is NaN now and the loss
    leaves it out (an L1 with NaN in it trained nothing but NaN weights): a finite network,
    not the one the fill as a target trains."""
    pairs, no_data = _padded_pairs()
    (lo, hi), mask = pairs[0], no_data[0]
    target = hi.clone()
    target[mask] = float("nan")  # as no_data_target marks it
    net, loss = _train([(lo, target)])
    weights = torch.cat([p.detach().flatten() for p in net.parameters()])
    assert np.isfinite(loss) and bool(torch.isfinite(weights).all())
    filled, _ = _train(pairs)  # the fill as a target: another network
    assert not torch.equal(torch.cat([p.detach().flatten() for p in filled.parameters()]), weights)


def test_a_patch_without_a_held_target_pixel_is_drawn_again():
    """Patches wholly in the padding (a fifth of a head CT's pixels) were drawn as often as
    any: their whole loss was the fill. Now every patch drawn has target pixels that hold
    data, and planes without any are left out."""
    pairs, no_data = _padded_pairs()
    lo, hi = pairs[0]
    hi = hi.masked_fill(no_data[0], float("nan"))
    empty = (torch.zeros_like(lo), torch.full_like(hi, float("nan")))
    sampler = PatchSampler([(lo, hi), empty], 2, patch_size=8, patches_per_epoch=64, seed=3)
    assert len(sampler.pairs) == 1
    _, highs = sampler.sample(64, sampler.generator(0))
    held = (~torch.isnan(highs)).flatten(1).sum(1)
    assert bool((held > 0).all())


def test_zero_shot_on_a_padded_ct_trains_on_the_held_pixels():
    """End to end: a CT with a padded ring (PixelPaddingValue −2000) trains and keeps the ring
    exact; the training record's L1 is over the held pixels (finite)."""
    yy, xx = np.mgrid[:32, :32]
    arr = (40 + 300 * np.sin(yy / 3.0) * np.cos(xx / 4.0)).astype(np.float32)
    ring = (yy - 15.5) ** 2 + (xx - 15.5) ** 2 >= 14.0**2
    arr[ring] = -2000.0
    img = MedImage(
        arr[None], modality="CT", units="HU",
        meta={"padding": {"value": -2000.0, "range_limit": None}},
    )  # fmt: skip
    out = zero_shot_upscale(
        img, 2, budget_s=None, epochs=1, patches_per_epoch=8, patch_size=16, progress=False
    )
    training = out.meta["derivation"]["training"]
    assert training["steps"] == 2 and training["final_l1"] is not None
    pad = np.repeat(np.repeat(ring, 2, 0), 2, 1)
    assert (out.array[0][pad] == -2000.0).all() and np.isfinite(out.array).all()
