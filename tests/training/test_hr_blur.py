"""degradation.hr_blur: a softer reconstruction kernel in the HR target and, through it, the LR."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.ndimage import gaussian_filter

from medsr.errors import InvalidParameterError
from medsr.training.config import HRBlurConfig, config_from_dict
from medsr.training.data import SRDataModule, blur_hr
from tests.training.conftest import tiny_config, tiny_dict


def _batch(dm: SRDataModule, n: int = 16):
    ds = dm.train_dataset()
    items = [ds[(0, 0, i)] for i in range(n)]
    return torch.stack([it["hr"] for it in items]), torch.tensor([it["group"] for it in items])


def _blur_config(fraction: float = 1.0, groups=("MR",), sigma=(0.5, 1.5)):
    return tiny_config(
        degradation={
            "kind": "bicubic",
            "hr_blur": {"fraction": fraction, "groups": list(groups), "sigma": list(sigma)},
        },
        data={"val_slices_per_file": 1},
    )


def test_config_validation():
    # group names are canonical; a modality code is not a group
    with pytest.raises(InvalidParameterError, match="unknown modality group 'CR'"):
        config_from_dict(tiny_dict(degradation={"kind": "default", "hr_blur": {"groups": ["CR"]}}))
    cfg = config_from_dict(
        tiny_dict(degradation={"kind": "default", "hr_blur": {"groups": ["ct", "Radiograph"]}})
    )
    assert cfg.degradation.hr_blur == HRBlurConfig(groups=["CT", "radiograph"])
    assert cfg.degradation.as_dict()["hr_blur"]["sigma"] == [0.3, 1.5]
    assert "hr_blur" not in tiny_config().degradation.as_dict()  # old cards keep their shape
    assert config_from_dict(cfg.to_dict()).degradation.hr_blur == cfg.degradation.hr_blur
    bad = [
        ({"fraction": -0.1}, "fraction"),
        ({"sigma": [1.5, 0.5]}, "sigma"),
        ({"sigma": 6.0}, "≤ 4 HR pixels"),
        ({"ct_sigma_hu": 10}, "unknown key"),
    ]
    for hr_blur, msg in bad:
        with pytest.raises(InvalidParameterError, match=msg):
            config_from_dict(tiny_dict(degradation={"kind": "default", "hr_blur": hr_blur}))
    with pytest.raises(InvalidParameterError, match="top-level"):
        config_from_dict(
            tiny_dict(
                degradation={"kind": "compose", "steps": [{"kind": "bicubic", "hr_blur": {}}]}
            )
        )


@settings(max_examples=25, deadline=None)
@given(
    sigmas=st.lists(st.floats(0.2, 2.0), min_size=1, max_size=4),
    h=st.integers(16, 40),
    w=st.integers(16, 40),
    seed=st.integers(0, 2**16),
)
def test_blur_is_a_gaussian_per_patch(sigmas, h, w, seed):
    """Each patch gets its own σ; the taps are a normalised Gaussian (mean kept) with edges
    reflected as scipy's ``mirror``, truncated at 3 σ of the batch's largest σ."""
    x = torch.from_numpy(
        np.random.default_rng(seed).normal(size=(len(sigmas), 1, h, w)).astype(np.float32)
    )
    s = torch.tensor(sigmas)
    y = blur_hr(x, s)
    r = min(int(np.ceil(3 * max(sigmas))), h - 1, w - 1)
    for b, sig in enumerate(sigmas):
        ref = gaussian_filter(x[b, 0].double().numpy(), sig, mode="mirror", radius=r)
        np.testing.assert_allclose(y[b, 0].numpy(), ref, atol=2e-5)
    # a constant stays constant (normalised taps): the blur changes sharpness, not intensity
    c = torch.full((2, 1, h, w), 3.25)
    torch.testing.assert_close(blur_hr(c, torch.tensor([0.4, 1.7])), c)


def test_same_kernel_in_target_and_input():
    dm = SRDataModule(_blur_config(1.0))
    dm.setup()
    hr, groups = _batch(dm)
    target, lr = dm.make_pair(hr, groups, generator=torch.Generator().manual_seed(3))
    assert target.shape == hr.shape
    # every patch is softer than the clean one (fraction 1), none beyond σ 1.5
    grad = lambda t: (t[..., 1:, :] - t[..., :-1, :]).abs().mean(dim=(1, 2, 3))  # noqa: E731
    assert bool((grad(target) < grad(hr)).all())
    assert bool((grad(target) > grad(blur_hr(hr, torch.full((16,), 1.6)))).all())
    # the LR is the degradation of the blurred target
    torch.testing.assert_close(
        lr, dm.degrade(target, groups, generator=torch.Generator().manual_seed(0))
    )
    # reproducible for a seed, different for another
    again, _ = dm.make_pair(hr, groups, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(again, target)
    other, _ = dm.make_pair(hr, groups, generator=torch.Generator().manual_seed(4))
    assert not torch.equal(other, target)


def test_fraction_and_groups():
    dm = SRDataModule(_blur_config(0.5))
    dm.setup()
    hr, groups = _batch(dm, 64)
    target, _ = dm.make_pair(hr, groups, generator=torch.Generator().manual_seed(5))
    blurred = int(((target - hr).abs().amax(dim=(1, 2, 3)) > 0).sum())
    assert 18 <= blurred <= 46  # ≈ half of 64
    # a group the config does not name is never blurred
    other = SRDataModule(_blur_config(1.0, groups=("CT",)))
    other.setup()
    target, _ = other.make_pair(hr, groups, generator=torch.Generator().manual_seed(5))
    assert target is hr
    # validation pairs are the same with and without it
    plain = SRDataModule(
        tiny_config(degradation={"kind": "bicubic"}, data={"val_slices_per_file": 1})
    )
    plain.setup()
    for x, y in zip(dm.val_items, plain.val_items, strict=True):
        torch.testing.assert_close(x.hr, y.hr)
        torch.testing.assert_close(x.lr, y.lr)


def test_bicubic_fraction_by_modality_group():
    """``params.bicubic_fraction`` may differ by modality group (with a ``default``): a group at
    1.0 is plain bicubic, the others keep the mixture; names are checked and made canonical."""
    from medsr.degradations import OneOf, RandomBicubic
    from medsr.training.data import bicubic_fraction, build_degradation

    cfg = config_from_dict(
        tiny_dict(
            degradation={
                "kind": "default",
                "params": {"bicubic_fraction": {"ct": 1, "Default": 0.5}},
            }
        )
    )
    assert cfg.degradation.params == {"bicubic_fraction": {"CT": 1, "default": 0.5}}
    assert isinstance(build_degradation(cfg.degradation, 2, "CT"), RandomBicubic)
    assert isinstance(build_degradation(cfg.degradation, 2, "MR"), OneOf)
    assert bicubic_fraction({"CT": 1.0, "default": 0.25}, "CR") == 0.25
    assert bicubic_fraction({"radiograph": 1.0}, "DX") == 1.0
    assert bicubic_fraction({"CT": 1.0}, "US") == 0.0  # no default: the modality's physics
    assert bicubic_fraction(0.5, "CT") == 0.5
    for bad, msg in (
        ({"XR": 1.0}, "unknown modality group 'XR'"),
        ({"CT": 1.5}, r"\[0, 1\]"),
        (True, r"\[0, 1\]"),
    ):
        with pytest.raises(InvalidParameterError, match=msg):
            config_from_dict(
                tiny_dict(degradation={"kind": "default", "params": {"bicubic_fraction": bad}})
            )
