"""The data module: corpus resolver, split by patient, fresh patches per epoch, LR on the fly."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from medsr.errors import InvalidParameterError
from medsr.image import MedImage
from medsr.io import save_image
from medsr.training.config import NormSpec
from medsr.training.data import (
    EpochSampler,
    SRDataModule,
    build_degradation,
    card_normalization,
    normalize_array,
    normalizer_spec_for,
    resolve_corpus,
    split_by_patient,
    train_val_split,
)
from tests.conftest import corpus_path
from tests.training.conftest import tiny_config

MR_FILES = [
    "corpus:S0_10slices.nii.gz",
    "corpus:anatomical.nii",
    "corpus:t1_coronal_slice.npy",
    "corpus:aniso_vox.nii.gz",
    "corpus:example4d.nii.gz",
]


def test_corpus_resolver_matches_the_test_locator_and_refuses_held_out_names():
    for name in ("anatomical.nii", "S0_10slices.nii.gz", "camera.png", "CT_small.dcm"):
        assert resolve_corpus(name) == corpus_path(name)
    for name in (
        "693_UNCR.dcm",
        "RG1_UNCR.dcm",
        "MR2_J2KI.dcm",
        "US1_UNCR.dcm",
        "eCT_Supplemental.dcm",
        "x.nii",
    ):
        with pytest.raises(InvalidParameterError, match="not a development-corpus file"):
            resolve_corpus(name)


def test_normalisation_matches_the_inference_normalizer():
    from medsr.intensity import Normalizer

    arr = np.linspace(-2000, 2000, 64, dtype=np.float32).reshape(1, 8, 8)
    img = MedImage(arr, modality="CT")
    for spec in ({"kind": "fixed", "low": -1024.0, "high": 3071.0}, {"kind": "minmax"}):
        expected = Normalizer.from_card({"normalization": spec}, img).forward(arr)
        np.testing.assert_allclose(normalize_array(arr, spec), expected, rtol=1e-6, atol=1e-6)
    table = {"CT": NormSpec("fixed", -1024.0, 3071.0), "default": NormSpec("minmax")}
    assert card_normalization(table, ["MR", "US"]) == {"kind": "minmax"}
    mixed = card_normalization(table, ["CT", "MR"])
    assert mixed["kind"] == "by-modality"
    assert normalizer_spec_for(mixed, "CT") == {"kind": "fixed", "low": -1024.0, "high": 3071.0}
    assert normalizer_spec_for(mixed, "CR") == {"kind": "minmax"}
    assert normalizer_spec_for({"kind": "minmax"}, "CT") == {"kind": "minmax"}


def test_split_by_patient_is_deterministic_and_disjoint(tmp_path):
    cfg = tiny_config(tmp_path, data={"files": MR_FILES, "val_files": [], "val_fraction": 0.4})
    dm = SRDataModule(cfg)
    dm.setup()
    train = {it.source.name for it in dm.train_loaded}
    val = {it.source.name for it in dm.val_loaded}
    assert train and val and not train & val
    assert len(val) == 2  # round(0.4 * 5)
    assert {it.source.name for it in dm.val_loaded} == {v.name.split("[")[0] for v in dm.val_items}
    dm2 = SRDataModule(cfg)
    dm2.setup()
    assert {it.source.name for it in dm2.val_loaded} == val
    dm3 = SRDataModule(cfg.replace(data={**cfg.to_dict()["data"], "seed": 5}))
    dm3.setup()
    assert not {it.source.name for it in dm3.train_loaded} & {
        it.source.name for it in dm3.val_loaded
    }


def test_files_of_one_patient_stay_together():
    items = [
        ("MR", "p1", "a"),
        ("MR", "p1", "b"),
        ("MR", "p2", "c"),
        ("MR", "p3", "d"),
        ("CT", "q", "e"),
    ]
    for seed in range(10):
        train, val, unvalidated = split_by_patient(items, 0.5, seed, key=lambda t: (t[0], t[1]))
        tp, vp = {t[1] for t in train}, {t[1] for t in val}
        assert not tp & vp
        assert unvalidated == ["CT"]  # a single CT patient: train only
        assert ("CT", "q", "e") in train


def test_single_file_modality_trains_but_is_not_validated(tmp_path):
    cfg = tiny_config(
        tmp_path,
        data={
            "files": ["corpus:camera.png", "corpus:S0_10slices.nii.gz", "corpus:anatomical.nii"],
            "val_files": [],
        },
    )
    dm = SRDataModule(cfg)
    with pytest.warns(UserWarning, match="only one patient/file of modality group 'default'"):
        dm.setup()
    assert "camera.png" in {it.source.name for it in dm.train_loaded}
    assert dm.unvalidated_groups == ["default"]
    assert dm.describe()["unvalidated_groups"] == ["default"]


def test_a_modality_weight_that_draws_nothing_is_said(tmp_path):
    """modality_weights giving CT a weight while every training file reads as MR (or as OT, a
    NIfTI without modality:) used to train without a word: the weight drew nothing."""
    data = {"files": ["corpus:anatomical.nii"], "val_files": []}
    dm = SRDataModule(tiny_config(tmp_path, data={**data, "modality_weights": {"CT": 2.0}}))
    with pytest.warns(UserWarning, match=r"weights CT, but no training file .* files are MR"):
        dm.train_dataset()
    with warnings.catch_warnings():  # a zero weight, or a group that is there: nothing to say
        warnings.filterwarnings("error", message="data.modality_weights")
        for weights in ({"CT": 0.0, "MR": 1.0}, {"MR": 2.0}):
            SRDataModule(
                tiny_config(tmp_path, data={**data, "modality_weights": weights})
            ).train_dataset()


def test_explicit_validation_file_cannot_be_in_training(tmp_path):
    cfg = tiny_config(tmp_path, data={"val_files": ["corpus:anatomical.nii"]})
    with pytest.raises(InvalidParameterError, match="in both"):
        SRDataModule(cfg).setup()


def test_patches_are_fresh_each_epoch_and_reproducible(tmp_path):
    dm = SRDataModule(tiny_config(tmp_path))
    dm.setup()
    ds = dm.train_dataset()
    sampler = EpochSampler(8)

    def epoch(e):
        sampler.set_epoch(e)
        return torch.stack([ds[k]["hr"] for k in sampler])

    e0, e0_again, e1 = epoch(0), epoch(0), epoch(1)
    assert torch.equal(e0, e0_again)
    assert not torch.equal(e0, e1)
    assert all(not torch.equal(a, b) for a, b in zip(e0, e1, strict=True))
    # another rank draws other patches
    other = torch.stack([ds[(0, 1, i)]["hr"] for i in range(8)])
    assert not torch.equal(e0, other)
    # the sampler counts epochs itself when nobody calls set_epoch
    s = EpochSampler(2)
    assert [k[0] for k in s] == [0, 0] and [k[0] for k in s] == [1, 1]


def test_lr_hr_shapes_and_values(tmp_path):
    cfg = tiny_config(tmp_path)
    dm = SRDataModule(cfg)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    p, s, b = cfg.data.patch_size, cfg.scale, cfg.data.batch_size
    assert batch["hr"].shape == (b, 1, p, p) and "lr" not in batch
    out = dm.on_after_batch_transfer(batch, 0)
    assert out["lr"].shape == (b, 1, p // s, p // s)
    assert out["lr"].dtype == torch.float32 and torch.isfinite(out["lr"]).all()
    assert 0.0 <= float(out["hr"].min()) and float(out["hr"].max()) <= 1.0  # minmax-normalised
    # low-contrast patches were redrawn
    assert (out["hr"].flatten(1).std(dim=1) > 0).all()
    # validation: whole slices cropped to ≤ val_max_size and a multiple of the scale
    assert dm.val_items
    for it in dm.val_items:
        h, w = it.hr.shape[-2:]
        assert h % s == 0 and w % s == 0 and max(h, w) <= cfg.data.val_max_size
        assert it.lr.shape[-2:] == (h // s, w // s)
        assert np.isfinite(it.bicubic_psnr) and 0 < it.bicubic_ssim <= 1
    vb = next(iter(dm.val_dataloader()))
    assert dm.on_after_batch_transfer(vb, 0)["lr"] is vb["lr"]  # validation LR is fixed


def test_configured_degradations(tmp_path):
    hr = torch.rand(4, 1, 32, 32)
    g = torch.Generator().manual_seed(0)
    cfg = tiny_config(
        tmp_path, degradation={"kind": "bicubic", "params": {"blur_sigma": [0.0, 1.0]}}
    )
    assert build_degradation(cfg.degradation, 2)(hr, generator=g).shape == (4, 1, 16, 16)
    cfg = tiny_config(
        tmp_path,
        degradation={
            "kind": "compose",
            "steps": [
                {"kind": "bicubic"},
                {"kind": "gaussian-noise", "params": {"sigma": [0.0, 0.01]}},
            ],
        },
    )
    assert build_degradation(cfg.degradation, 2)(hr, generator=g).shape == (4, 1, 16, 16)
    cfg = tiny_config(
        tmp_path,
        degradation={"kind": "kspace", "params": {"window": {"choices": [None, "hamming"]}}},
    )
    assert build_degradation(cfg.degradation, 2)(hr, generator=g).shape == (4, 1, 16, 16)
    # a lateral-only model does not make in-plane ×2 pairs: a clear error at setup
    cfg = tiny_config(tmp_path, degradation={"kind": "ultrasound"})
    with pytest.raises(InvalidParameterError, match="both axes reduced"):
        SRDataModule(cfg).setup()


def test_folders_and_paths(tmp_path):
    folder = tmp_path / "pngs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        arr = (rng.random((48, 40)) * 255).astype(np.float32)
        save_image(MedImage(arr[None]), folder / f"img{i}.png")
    (folder / "notes.txt").write_text("not an image")
    cfg = tiny_config(
        tmp_path,
        data={"files": [str(folder)], "val_files": [], "val_fraction": 0.34, "min_patch_std": 0.0},
    )
    dm = SRDataModule(cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dm.setup()
    names = sorted(it.source.name for it in [*dm.train_loaded, *dm.val_loaded])
    assert names == ["img0.png", "img1.png", "img2.png"]
    assert len(dm.val_loaded) == 1
    with pytest.raises(InvalidParameterError, match="does not exist"):
        SRDataModule(tiny_config(tmp_path, data={"files": [str(tmp_path / "nope.nii")]})).setup()


@pytest.mark.parametrize("clash", ["file", "patient"])
def test_val_files_that_overlap_training_fail_before_anything_is_loaded(tmp_path, clash):
    """A validation file (or patient) also in training is refused, and nothing is read first."""
    from pathlib import Path

    from medsr.training.data import Source

    a, b = Path(tmp_path / "a.nii.gz"), Path(tmp_path / "b.nii.gz")
    train = [Source(a, "a.nii.gz", "MR", "p1")]
    val = [Source(a if clash == "file" else b, "v.nii.gz", "MR", "p2" if clash == "file" else "p1")]
    loaded: list[Source] = []
    with pytest.raises(InvalidParameterError, match="one set only"):
        train_val_split(
            train, val, lambda src: loaded.append(src) or [src], 0.2, 0, key=lambda it: ("MR", "x")
        )
    assert loaded == []
    ok = [Source(b, "b.nii.gz", "MR", "p2")]
    tr, va, _ = train_val_split(
        train, ok, lambda src: [src.name], 0.2, 0, key=lambda it: ("MR", it)
    )
    assert (tr, va) == (["a.nii.gz"], ["b.nii.gz"])


def test_patch_margin_degrades_patches_with_their_context(tmp_path):
    """``data.patch_margin``: each patch is drawn with that much context, degraded whole, and the
    context cut away — so a k-space truncation does not wrap the patch's own edges around."""
    cfg = tiny_config(
        tmp_path, data={"patch_margin": 8}, degradation={"kind": "kspace", "params": {}}
    )
    dm = SRDataModule(cfg)
    dm.setup()
    p, m, s, b = cfg.data.patch_size, cfg.data.patch_margin, cfg.scale, cfg.data.batch_size
    batch = next(iter(dm.train_dataloader()))
    assert batch["hr"].shape == (b, 1, p + 2 * m, p + 2 * m)
    big = batch["hr"].clone()
    out = dm.on_after_batch_transfer(dict(batch), 0)
    assert out["hr"].shape == (b, 1, p, p) and out["lr"].shape == (b, 1, p // s, p // s)
    torch.testing.assert_close(out["hr"], big[..., m : m + p, m : m + p])  # no HR noise here
    # the LR is the centre of the whole drawn area's truncation, not the patch's own
    lr_big = dm.degrade(big, batch["group"], torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        out["lr"], lr_big[..., m // s : m // s + p // s, m // s : m // s + p // s]
    )
    alone = dm.degrade(out["hr"], batch["group"], torch.Generator().manual_seed(0))
    assert float((alone - out["lr"]).abs().max()) > 1e-3  # degrading the patch alone differs
    with pytest.raises(
        InvalidParameterError, match=r"patch_margin \(3\) must be a multiple of scale"
    ):
        tiny_config(tmp_path, data={"patch_margin": 3})
    with pytest.raises(InvalidParameterError, match="patch_margin must be ≥ 0"):
        tiny_config(tmp_path, data={"patch_margin": -2})


def test_validation_baseline_is_the_low_band_base(tmp_path):
    """A model trained through a low-band guard is validated against its base (zero-filled
    k-space for a k-space guard), not bicubic."""
    from medsr.models.registry import create_model
    from medsr.training.data import sr_metrics

    cfg = tiny_config(
        tmp_path,
        model={"low_band": {"base": "kspace"}},
        degradation={"kind": "kspace", "params": {}},
    )
    dm = SRDataModule(cfg)
    dm.setup()
    it = dm.val_items[0]
    for base in ("kspace", "bicubic"):
        up = create_model(base, scale=cfg.scale)(it.lr[None])[0, 0].numpy()
        psnr = sr_metrics(up, it.hr[0].numpy(), cfg.scale)[0]
        assert (it.bicubic_psnr == pytest.approx(psnr, abs=1e-6)) == (base == "kspace")


def test_a_series_folder_is_hashed_as_its_sha256sum_listing(tmp_path):
    """The card's sha256 of a DICOM folder source: ``cd FOLDER && sha256sum * | sha256sum``."""
    import hashlib

    from medsr.training.data import source_sha256

    (tmp_path / "IM2.dcm").write_bytes(b"two")
    (tmp_path / "IM1.dcm").write_bytes(b"one")
    (tmp_path / ".hidden").write_bytes(b"skip")
    listing = "".join(
        f"{hashlib.sha256(data).hexdigest()}  {name}\n"
        for name, data in (("IM1.dcm", b"one"), ("IM2.dcm", b"two"))
    )
    assert source_sha256(tmp_path) == hashlib.sha256(listing.encode()).hexdigest()
    assert source_sha256(tmp_path / "IM1.dcm") == hashlib.sha256(b"one").hexdigest()
