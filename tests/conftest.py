"""Shared fixtures: corpus files (CORPUS.md only) and tiny synthetic images."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

_NIBABEL_FILES = {"anatomical.nii", "example4d.nii.gz", "standard.nii.gz"}
_DIPY_FILES = {"S0_10slices.nii.gz", "aniso_vox.nii.gz", "t1_coronal_slice.npy"}


def corpus_path(name: str) -> Path:
    """Locate a development-corpus file by name (see shared/data/CORPUS.md)."""
    if name in _NIBABEL_FILES:
        import nibabel

        return Path(nibabel.__file__).parent / "tests" / "data" / name
    if name in _DIPY_FILES:
        import dipy

        return Path(dipy.__file__).parent / "data" / "files" / name
    if name in ("camera.png", "phantom.png"):
        import skimage

        return Path(skimage.__file__).parent / "data" / name
    from pydicom.data import get_testdata_file

    found = get_testdata_file(name)
    if found is None:
        pytest.skip(f"corpus file {name} is not installed")
    return Path(found)


@pytest.fixture
def corpus():
    return corpus_path


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    paths = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module (``pytestmark = pytest.mark.usefixtures(...)``): two
    OpenMP threads on a busy 2-core machine spin on each other."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
