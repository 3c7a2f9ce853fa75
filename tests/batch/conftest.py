"""A small archive: good files, a corrupt one and non-images, built from corpus files."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import corpus_path, make_ct_series


def make_archive(root: Path) -> Path:
    """The test archive (see the module docstring)."""
    import nibabel as nib
    from PIL import Image

    rng = np.random.default_rng(7)
    make_ct_series(root / "study1" / "ct")
    (root / "study1" / "mr").mkdir(parents=True)
    shutil.copy(corpus_path("MR_small.dcm"), root / "study1" / "mr" / "MR_small.dcm")
    (root / "volumes").mkdir()
    vol = rng.normal(100, 20, size=(12, 10, 3)).astype(np.float32)
    nib.save(nib.Nifti1Image(vol, np.diag([0.8, 0.8, 3.0, 1.0])), root / "volumes" / "brain.nii.gz")
    (root / "photos").mkdir()
    img = (rng.random((16, 20)) * 255).astype(np.uint8)
    Image.fromarray(img).save(root / "photos" / "slice.png")
    (root / "broken").mkdir()
    data = corpus_path("CT_small.dcm").read_bytes()
    (root / "broken" / "truncated.dcm").write_bytes(data[: len(data) // 2])
    (root / "notes.txt").write_text("not an image\n")
    try:
        liver = corpus_path("liver.dcm")
    except pytest.skip.Exception:
        liver = None
    if liver is not None:
        (root / "seg").mkdir()
        shutil.copy(liver, root / "seg" / "liver.dcm")
    return root


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    return make_archive(tmp_path / "archive")
