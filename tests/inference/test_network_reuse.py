"""Networks resolved for inference alone are built once per process and reused while unchanged
(:func:`medsr.inference.planes._reuse_network`); a caller's own networks are never shared."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import medsr
from medsr.image import MedImage
from medsr.inference import planes
from medsr.inference.planes import PlaneUpscaler
from medsr.models.resolver import resolve_model
from medsr.models.weights import load_model


@pytest.fixture(autouse=True)
def _empty_cache():
    planes._NETWORKS.clear()
    yield
    planes._NETWORKS.clear()


def _plane(rng) -> MedImage:
    return MedImage(
        rng.normal(size=(1, 24, 24)).astype(np.float32) * 100, modality="CT", units="HU"
    )


def _fresh(name: str) -> torch.nn.Module:
    """What the weights file itself gives: a network loaded afresh, no cache involved."""
    net, _ = load_model(resolve_model(name).path)
    return net


def test_upscalers_by_name_share_one_network_with_the_files_values(rng):
    a = PlaneUpscaler("fast-x2", 2)
    b = PlaneUpscaler("fast-x2", 2)
    assert a.net is b.net
    img = _plane(rng)
    fresh = PlaneUpscaler(resolve_model("fast-x2"), 2)  # a caller's own LoadedModel: loaded itself
    assert fresh.net is not a.net
    np.testing.assert_array_equal(b.upscale(img).array, fresh.upscale(img).array)


def test_a_network_changed_in_place_is_not_reused(rng):
    a = PlaneUpscaler("fast-x2", 2)
    with torch.no_grad():  # someone trains the network they got from an upscaler
        next(a.net.parameters()).add_(1.0)
    b = PlaneUpscaler("fast-x2", 2)
    assert b.net is not a.net
    ref = _fresh("fast-x2")
    for p, q in zip(b.net.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_a_callers_networks_are_their_own():
    up = PlaneUpscaler("fast-x2", 2)
    mine = resolve_model("fast-x2")
    assert not mine.inference_only and mine.net is not up.net
    net, _ = medsr.load_pretrained("fast-x2")
    assert net is not up.net
    # a caller's LoadedModel stays theirs: resolving it again keeps its setting
    assert not resolve_model(mine, inference_only=True).inference_only
    assert PlaneUpscaler(mine, 2).net is mine.net


def test_the_pipeline_reuses_the_network_of_its_previous_call(rng):
    from medsr.pipeline import upscale_with_safeguards

    img = _plane(rng)
    loaded = resolve_model("fast-x2", inference_only=True)  # what check_options resolves
    first, _ = upscale_with_safeguards(img, 2, loaded, self_check=False)
    assert [entry[0] for entry in planes._NETWORKS.values()] == [loaded.net]
    again = resolve_model("fast-x2", inference_only=True)
    second, _ = upscale_with_safeguards(img, 2, again, self_check=False)
    assert again.net is loaded.net
    np.testing.assert_array_equal(first.array, second.array)


def test_the_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(planes, "NETWORK_CACHE_SIZE", 2)
    for name in ("fast-x2", "srcnn-x2", "vdsr-x2"):
        PlaneUpscaler(name, 2)
    assert len(planes._NETWORKS) == 2
    assert all("fast-x2" not in key[1] for key in planes._NETWORKS)


def test_classical_models_are_not_cached():
    PlaneUpscaler("lanczos", 2)
    assert not planes._NETWORKS
