"""The shipped slice interpolator ``interp-cnn``: beside the other weights, complete card, JSON
twin (the card plus its report sections), the trained tensors unchanged, listed by
``medsr models``."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from medsr.models.cards import REPORT_SECTIONS
from medsr.models.pretrained import WEIGHTS_DIR
from medsr.models.resolver import list_pretrained, resolve_model
from medsr.models.weights import read_card

PATH = WEIGHTS_DIR / "interp-cnn.safetensors"
#: digest of the tensors trained for issue 8 (names, dtypes, shapes, bytes): writing the card must
#: never change them
TENSORS_SHA256 = "71c50adbdf0b10cc748766169c68bcc1b933a3534a4b18ab806f2f9e4bb650a5"
#: the keys tests/models/test_shipped.py requires of every in-plane card
CARD_KEYS = ("architecture", "kwargs", "scale", "normalization", "degradation", "training_data",
             "summary", "training", "evaluation", "limitations", "version", "steps")  # fmt: skip

pytestmark = pytest.mark.skipif(not PATH.is_file(), reason="interp-cnn is not shipped")


def test_card_is_complete_and_matches_its_json():
    card = read_card(PATH)
    for key in CARD_KEYS:
        assert key in card, key
    assert card["name"] == "interp-cnn" and card["kind"] == "slice-interpolator"
    assert card["architecture"] == "interp-cnn" and card["scale"] == 2 and card["in_channels"] == 2
    assert card["normalization"]["kind"] == "percentile-per-volume"
    data = card["training_data"]
    files = data["train_files"] + data["val_files"]
    assert files and not any(f.startswith(("693_", "RG1_", "MR2_", "US1_", "eCT_")) for f in files)
    assert not set(data["train_files"]) & set(data["val_files"])
    assert card["steps"] == card["training"]["steps"] == 1200
    assert {"insert_between_x2", "thick_slice_x2"} <= set(card["evaluation"])
    assert card["limitations"] and card["summary"]
    # the JSON twin: the file's card plus the report sections (scripts/card_sections.py)
    side = json.loads((WEIGHTS_DIR / "interp-cnn.json").read_text())
    assert {k: v for k, v in side.items() if k not in REPORT_SECTIONS} == card
    assert set(REPORT_SECTIONS) <= set(side)


def test_tensors_are_the_trained_ones():
    from safetensors.torch import load_file

    tensors = load_file(str(PATH))
    h = hashlib.sha256()
    for k in sorted(tensors):
        v = tensors[k].contiguous()
        h.update(k.encode())
        h.update(str(v.dtype).encode())
        h.update(str(tuple(v.shape)).encode())
        h.update(v.numpy().tobytes())
    assert h.hexdigest() == TENSORS_SHA256


def test_listed_and_resolved_as_a_slice_interpolator(one_torch_thread):
    from medsr.image import MedImage
    from medsr.interpolation.core import interpolate_slices

    assert {m.name: m.kind for m in list_pretrained(kind="slice-interpolator")} == {
        "interp-cnn": "slice-interpolator"
    }
    loaded = resolve_model("interp-cnn", kinds=("slice-interpolator",))
    assert loaded.shipped and loaded.checksum.startswith("sha256:")
    img = MedImage(
        np.random.default_rng(0).normal(size=(3, 16, 12)).astype(np.float32), spacing=(2, 1, 1)
    )
    out = interpolate_slices(img, "interp-cnn", 2)
    assert out.spatial_shape == (6, 16, 12) and np.isfinite(out.array).all()
    assert out.meta["derivation"]["model"] == "interp-cnn"
