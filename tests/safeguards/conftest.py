"""Fixtures for the fidelity safeguards: corpus images and a tiny learned model file."""

from __future__ import annotations

from pathlib import Path

import pytest

import medsr
from tests.conftest import corpus_path


@pytest.fixture(scope="session")
def ct_small():
    return medsr.load_image(corpus_path("CT_small.dcm"))


@pytest.fixture(scope="session")
def mr_small():
    return medsr.load_image(corpus_path("MR_small.dcm"))


def make_weights(path: Path, modalities=("MR",), **card_extra) -> Path:
    """A random-initialised tiny SRCNN ×2 with a model card (not equivariant: TTA std > 0)."""
    import torch

    from medsr.models.registry import create_model
    from medsr.models.weights import save_model

    torch.manual_seed(0)
    kwargs = {"scale": 2, "num_features": 4, "kernel_sizes": [3, 1, 3]}
    net = create_model("srcnn", **kwargs)
    card = {
        "name": path.stem,
        "architecture": "srcnn",
        "kwargs": kwargs,
        "scale": 2,
        "kind": "super-resolution",
        "normalization": {"kind": "minmax"},
        "training_data": {"modalities": list(modalities)},
        "version": "0.1.0",
        **card_extra,
    }
    return save_model(net, path, card)


@pytest.fixture(scope="session")
def mr_weights(tmp_path_factory) -> Path:
    return make_weights(tmp_path_factory.mktemp("w") / "tiny-mr.safetensors")
