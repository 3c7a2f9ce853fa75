"""With no model named, the default follows the stated physics: ``default-x{s}-{kind}`` when
such weights are shipped (``default-x2-kspace`` for ``--degradation kspace``, or MR under
``auto``), on every front end. Named models are never switched."""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
import pytest

import medsr
from medsr.batch import run_batch
from medsr.inference.planes import PlaneUpscaler
from medsr.io.sidecar import read_sidecar
from medsr.models import resolver
from medsr.pipeline import physics_kind, upscale_file, upscale_with_safeguards
from tests.conftest import corpus_path

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def kspace_default(monkeypatch, tmp_path) -> str:
    """A shipped ``default-x2-kspace`` (fast-x2's weights under that name)."""
    real = resolver.shipped_weights()
    fake = tmp_path / "weights" / "default-x2-kspace.safetensors"
    fake.parent.mkdir()
    shutil.copy(real["fast-x2"], fake)
    monkeypatch.setattr(resolver, "shipped_weights", lambda: {**real, "default-x2-kspace": fake})
    return resolver.file_checksum(fake)


def test_default_name_follows_the_physics(kspace_default):
    assert resolver.default_model_name(2, "kspace") == "default-x2-kspace"
    assert (
        resolver.default_model_name(2) == resolver.default_model_name(2, "bicubic") == "default-x2"
    )
    assert resolver.default_model_name(2, "ct-sparse-view") == "default-x2"  # none for that physics
    assert resolver.default_model_name(3, "kspace") == "bicubic"  # no default at ×3 at all
    loaded = resolver.resolve_model(None, scale=2, physics="kspace")
    assert (loaded.name, loaded.checksum, loaded.by_default) == (
        "default-x2-kspace",
        kspace_default,
        True,
    )
    assert not resolver.resolve_model("default-x2", scale=2).by_default
    assert physics_kind("auto", "MR") == physics_kind("kspace", "CT") == "kspace"
    assert physics_kind("auto", "CT") is None and physics_kind(None, "MR") is None


def test_default_physics_is_known_before_the_image_as_it_is_resolved(kspace_default):
    """``--degradation default`` resolves to the modality's default kind (MR: k-space) when the
    image is read; ``physics_kind``, which the PACS bridge asks before reading a series to name
    the model in its derivation key, said "default": the key named ``default-x2`` while the
    pipeline ran ``default-x2-kspace``."""
    from medsr.degradations import default_kind
    from medsr.pacs.bridge import _model_for_series
    from medsr.safeguards import resolve_measurement

    for modality in ("MR", "CT", "US", "CR"):
        expected = resolve_measurement("default", 2, modality).kind
        assert physics_kind("default", modality) == default_kind(modality) == expected
    default = resolver.resolve_model(None, scale=2)
    assert _model_for_series(default, 2, "default", "MR").name == "default-x2-kspace"
    assert _model_for_series(default, 2, "default", "CT").name == "default-x2"


def test_upscaler_switches_only_an_unnamed_default(kspace_default):
    assert PlaneUpscaler(None, 2, base="kspace").loaded.name == "default-x2-kspace"
    assert PlaneUpscaler(None, 2).loaded.name == "default-x2"
    assert PlaneUpscaler("default-x2", 2, base="kspace").loaded.name == "default-x2"  # named
    named = resolver.resolve_model("default-x2", scale=2)
    assert PlaneUpscaler(named, 2, base="kspace").loaded.name == "default-x2"
    # a batch's shared default: the k-space one is loaded once and shared after that
    shared = PlaneUpscaler(resolver.resolve_model(None, scale=2), 2, range_guard=False)
    first = PlaneUpscaler(shared, 2, base="kspace")
    again = PlaneUpscaler(shared, 2, base="kspace")
    assert first.loaded.name == again.loaded.name == "default-x2-kspace"
    assert again.net is first.net and first.range_margin is None  # the shared settings
    back = PlaneUpscaler(first, 2, base="bicubic")
    assert back.loaded.name == "default-x2"


def test_every_front_end_runs_the_physics_default(kspace_default, tmp_path):
    mr = medsr.load_image(corpus_path("MR_small.dcm"))
    ct = medsr.load_image(corpus_path("CT_small.dcm"))
    opts = {"maps": False, "tta": False, "warn": False}
    sr, _ = upscale_with_safeguards(mr, 2, None, degradation="auto", **opts)  # API
    assert sr.meta["derivation"]["model"] == "default-x2-kspace"
    prov = sr.meta["provenance"]
    assert (prov["model"], prov["model_checksum"]) == ("default-x2-kspace", kspace_default)
    sr, _ = upscale_with_safeguards(ct, 2, None, degradation="auto", **opts)  # CT: no physics
    assert sr.meta["derivation"]["model"] == "default-x2"
    sr, _ = upscale_with_safeguards(mr, 2, "default-x2", degradation="auto", **opts)  # named
    assert sr.meta["derivation"]["model"] == "default-x2"
    # medsr upscale (the CLI's function): the model was resolved before the file was read
    out = upscale_file(
        corpus_path("MR_small.dcm"), tmp_path / "mr.nii.gz", scale=2, degradation="kspace"
    )
    assert read_sidecar(Path(out))["provenance"]["model"] == "default-x2-kspace"
    # batch: MR under auto runs the k-space default, CT the default
    root = tmp_path / "in"
    root.mkdir()
    for name in ("CT_small.dcm", "MR_small.dcm"):
        shutil.copy(corpus_path(name), root / name)
    summary = run_batch(root, tmp_path / "o", workers=1, threads=1, degradation="auto")
    assert summary.counts["ok"] == 2
    assert (
        "default-x2-kspace"
        in pydicom.dcmread(tmp_path / "o" / "MR_small.dcm").DerivationDescription
    )
    ct_text = pydicom.dcmread(tmp_path / "o" / "CT_small.dcm").DerivationDescription
    assert "default-x2" in ct_text and "default-x2-kspace" not in ct_text


def test_web_and_pacs_pick_it_before_running(kspace_default):
    from medsr.pacs.bridge import _model_for_series, derivation_token
    from medsr.service.catalog import ModelCatalog

    card, loaded = ModelCatalog().lookup("default", 2)
    assert card["name"] == "default-x2" and loaded.by_default
    assert PlaneUpscaler(loaded, 2, base="kspace").loaded.name == "default-x2-kspace"
    assert not ModelCatalog().lookup("default-x2", 2)[1].by_default
    default = resolver.resolve_model(None, scale=2)
    mr = _model_for_series(default, 2, "auto", "MR")
    assert mr.name == "default-x2-kspace"
    assert _model_for_series(default, 2, "auto", "CT") is default
    assert (
        _model_for_series(resolver.resolve_model("default-x2", scale=2), 2, "kspace", "MR").name
        == "default-x2"
    )
    # the derivation key names the model that runs
    assert derivation_token("1.2.3", mr, 2) != derivation_token("1.2.3", default, 2)


def test_shipped_kspace_defaults():
    """The k-space defaults that ship are fine-tunes of the defaults, behind a k-space guard."""
    from medsr.models.weights import read_card

    shipped = resolver.shipped_weights()
    for s in (2, 4):
        name = f"default-x{s}-kspace"
        if name not in shipped:
            continue
        card = read_card(shipped[name])
        assert card["low_band"]["base"] == "kspace" and card["scale"] == s
        assert card["kwargs"] == read_card(shipped[f"default-x{s}"])["kwargs"]
        assert resolver.default_model_name(s, "kspace") == name
        assert (
            "MR" in card["training_data"]["modalities"]
            and "CT" not in card["training_data"]["modalities"]
        )
