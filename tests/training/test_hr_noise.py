"""degradation.hr_noise: scanner noise in the HR target and, downsampled, in the LR."""

from __future__ import annotations

import pytest
import torch

from medsr.errors import InvalidParameterError
from medsr.training.config import HRNoiseConfig, NormSpec
from medsr.training.data import SRDataModule, build_hr_noise
from tests.training.conftest import tiny_config, tiny_dict


def _batch(dm: SRDataModule, n: int = 16, epoch: int = 0):
    ds = dm.train_dataset()
    items = [ds[(epoch, 0, i)] for i in range(n)]
    return torch.stack([it["hr"] for it in items]), torch.tensor([it["group"] for it in items])


def _noisy_config(fraction: float = 1.0, **extra):
    return tiny_config(
        degradation={"kind": "bicubic", "hr_noise": {"fraction": fraction, **extra}},
        data={"val_slices_per_file": 1},
    )


def test_config_validation():
    from medsr.training.config import config_from_dict

    d = tiny_dict(degradation={"kind": "default", "hr_noise": {"fraction": 0.3}})
    cfg = config_from_dict(d)
    assert cfg.degradation.hr_noise == HRNoiseConfig(fraction=0.3)
    assert cfg.degradation.as_dict()["hr_noise"]["fraction"] == 0.3
    assert "hr_noise" not in tiny_config().degradation.as_dict()  # old cards keep their shape
    assert config_from_dict(cfg.to_dict()).degradation.hr_noise == cfg.degradation.hr_noise
    bad = [
        ({"fraction": 1.5}, "fraction"),
        ({"groups": ["US"]}, "no scanner-noise model"),
        ({"mr_sigma": [0.05, 0.01]}, "mr_sigma"),
        ({"ct_nps_peak": [0.1, 0.9]}, "Nyquist"),
        ({"radiograph_dose": [0, 10]}, "radiograph_dose"),
        ({"sigma": 0.1}, "unknown key"),
    ]
    for hr_noise, msg in bad:
        with pytest.raises(InvalidParameterError, match=msg):
            config_from_dict(tiny_dict(degradation={"kind": "default", "hr_noise": hr_noise}))
    with pytest.raises(InvalidParameterError, match="top-level"):
        config_from_dict(
            tiny_dict(
                degradation={
                    "kind": "compose",
                    "steps": [{"kind": "bicubic", "hr_noise": {"fraction": 0.5}}],
                }
            )
        )


def test_ct_sigma_is_given_in_hu():
    norm = {"CT": NormSpec("fixed", -1024.0, 3071.0), "default": NormSpec("minmax")}
    cfg = HRNoiseConfig(fraction=0.5, ct_sigma_hu=[8.19, 40.95], ct_nps_peak=None)
    ct = build_hr_noise(cfg, "CT", norm)
    assert ct.params["sigma"] == pytest.approx((0.002, 0.01))
    assert ct.params["nps_peak"] is None and ct.fraction == 0.5
    assert build_hr_noise(cfg, "MR", norm).group == "MR"
    assert build_hr_noise(cfg, "CR", norm).group == "radiograph"
    assert build_hr_noise(cfg, "US", norm) is None  # no model: unchanged
    assert build_hr_noise(HRNoiseConfig(groups=["MR"]), "CT", norm) is None
    assert build_hr_noise(HRNoiseConfig(fraction=0.0), "MR", norm) is None
    assert build_hr_noise(None, "MR", norm) is None


def test_same_noise_in_target_and_input():
    cfg = _noisy_config(1.0, mr_sigma=0.03)
    dm = SRDataModule(cfg)
    dm.setup()
    assert set(dm._hr_noise) == {"MR"}
    hr, groups = _batch(dm)
    g = torch.Generator().manual_seed(11)
    target, lr = dm.make_pair(hr, groups, generator=g)
    assert target.shape == hr.shape and lr.shape == (16, 1, hr.shape[-2] // 2, hr.shape[-1] // 2)
    resid = target - hr
    assert float(resid.abs().amax(dim=(1, 2, 3)).min()) > 0  # every patch noised (fraction 1)
    # the LR is the degradation (bicubic, noise-free) of the *noisy* target
    torch.testing.assert_close(
        lr, dm.degrade(target, groups, generator=torch.Generator().manual_seed(0))
    )
    # so the LR carries the noise too: it differs from the LR of the clean HR by the
    # downsampled noise, not by an independent draw
    lr_clean = dm.degrade(hr, groups, generator=torch.Generator().manual_seed(0))
    down = dm.degrade(resid, groups, generator=torch.Generator().manual_seed(0))
    assert float((lr - lr_clean).std()) > 0.005
    corr = torch.corrcoef(torch.stack([(lr - lr_clean).flatten(), down.flatten()]))[0, 1]
    assert float(corr) > 0.9


def test_hr_noise_fraction_and_determinism():
    cfg = _noisy_config(0.3)
    a, b = SRDataModule(cfg), SRDataModule(cfg)
    a.setup()
    b.setup()
    hr, groups = _batch(a, 64)
    ta, la = a.make_pair(hr, groups, generator=torch.Generator().manual_seed(5))
    tb, lb = b.make_pair(hr, groups, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(ta, tb)
    torch.testing.assert_close(la, lb)
    noised = int(((ta - hr).abs().amax(dim=(1, 2, 3)) > 0).sum())
    assert 8 <= noised <= 34  # ≈ 30 % of 64 patches
    tc, _ = a.make_pair(hr, groups, generator=torch.Generator().manual_seed(6))
    assert not torch.equal(ta, tc)
    # batches through the Lightning hook get the noisy target as "hr"
    out = a.on_after_batch_transfer({"hr": hr, "group": groups}, 0)
    assert out["lr"].shape[-1] == hr.shape[-1] // 2 and out["hr"].shape == hr.shape


def test_off_by_default_leaves_targets_clean():
    dm = SRDataModule(tiny_config(data={"val_slices_per_file": 1}))
    dm.setup()
    assert dm._hr_noise == {}
    hr, groups = _batch(dm, 8)
    target, _ = dm.make_pair(hr, groups, generator=torch.Generator().manual_seed(0))
    assert target is hr
    # validation pairs are never noised: they are identical with and without hr_noise
    noisy = SRDataModule(_noisy_config(1.0))
    noisy.setup()
    clean = SRDataModule(
        tiny_config(degradation={"kind": "bicubic"}, data={"val_slices_per_file": 1})
    )
    clean.setup()
    for x, y in zip(noisy.val_items, clean.val_items, strict=True):
        torch.testing.assert_close(x.hr, y.hr)
        torch.testing.assert_close(x.lr, y.lr)
