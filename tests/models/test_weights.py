"""A weights file whose model card cannot rebuild its network is one clear error, never a
traceback or a network built for something else (medsr.models.weights, the resolver)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.torch import save_file

from medsr.errors import CorruptInputError, MedSRError, UnknownModelError
from medsr.image import MedImage
from medsr.intensity import Normalizer
from medsr.models.registry import create_model
from medsr.models.resolver import resolve_model
from medsr.models.weights import load_model, read_card, save_model

KWARGS = {"in_channels": 1, "num_features": 4, "num_blocks": 3, "scale": 2}


@pytest.fixture
def good(tmp_path):
    net = create_model("residual5", **KWARGS)
    card = {"architecture": "residual5", "kwargs": KWARGS, "scale": 2}
    path = save_model(net, tmp_path / "good.safetensors", card)
    state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    return path, state, card


def _write(tmp_path, name, state, card_text):
    path = tmp_path / name
    save_file(state, str(path), metadata={"medsr_card": card_text})
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: "{not json", "not valid JSON"),
        (lambda c: json.dumps([1, 2]), "not a JSON object"),
        (lambda c: json.dumps({k: v for k, v in c.items() if k != "kwargs"}), "kwargs"),
        (lambda c: json.dumps({**c, "scale": "two"}), "scale is not a whole factor"),
        (lambda c: json.dumps({**c, "scale": 4}), r"says ×4 but builds its network for ×2"),
    ],
)
def test_a_card_that_cannot_describe_the_network_is_refused(good, tmp_path, change, message):
    _, state, card = good
    path = _write(tmp_path, "bad.safetensors", state, change(card))
    with pytest.raises(CorruptInputError, match=message):
        read_card(path)
    with pytest.raises(CorruptInputError, match=message):
        resolve_model(path)


def test_weights_of_other_shapes_or_constructor_arguments_are_refused(good, tmp_path):
    _, state, card = good
    wider = _write(
        tmp_path,
        "w.safetensors",
        state,
        json.dumps({**card, "kwargs": {**KWARGS, "num_features": 8}}),
    )
    with pytest.raises(CorruptInputError, match=r"do not fit .* another shape, e\.g\. body\.0"):
        load_model(wider)
    bogus = _write(
        tmp_path, "k.safetensors", state, json.dumps({**card, "kwargs": {**KWARGS, "bogus": 1}})
    )
    with pytest.raises(CorruptInputError, match=r"cannot build 'residual5'.*bogus"):
        load_model(bogus)
    with pytest.raises(MedSRError):  # through the resolver, on first use of the network
        _ = resolve_model(wider, scale=2).net


def test_an_unknown_architecture_names_the_file(good, tmp_path):
    _, state, card = good
    path = _write(tmp_path, "a.safetensors", state, json.dumps({**card, "architecture": "nosuch"}))
    with pytest.raises(UnknownModelError, match=r"'a\.safetensors' holds a 'nosuch' network"):
        resolve_model(path)


def test_an_unknown_normalization_kind_is_a_medsr_error():
    image = MedImage(np.zeros((1, 4, 4), np.float32), spacing=(1.0, 1.0, 1.0))
    with pytest.raises(CorruptInputError, match="normalization kind 'bogus'"):
        Normalizer.from_card({"normalization": {"kind": "bogus"}}, image)


def test_a_good_card_still_loads(good):
    path, _, _ = good
    net, card = load_model(path)
    assert card["kwargs"] == KWARGS and not net.training
