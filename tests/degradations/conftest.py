"""Synthetic images for the degradation tests (Shepp–Logan phantom, random shapes, noise)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.data import shepp_logan_phantom
from skimage.transform import resize


@pytest.fixture(scope="session")
def phantom128() -> np.ndarray:
    """Shepp–Logan phantom, 128², values in [0, 1] (float32)."""
    return resize(shepp_logan_phantom(), (128, 128), anti_aliasing=True).astype(np.float32)


@pytest.fixture(scope="session")
def phantom64() -> np.ndarray:
    """Shepp–Logan phantom, 64², values in [0, 1] (float32)."""
    return resize(shepp_logan_phantom(), (64, 64), anti_aliasing=True).astype(np.float32)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def shapes() -> torch.Tensor:
    """``(4, 1, 64, 64)`` images of random ellipses on a dark background, in [0, 1]."""
    n, size = 4, 64
    g = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    out = np.zeros((n, 1, size, size), np.float32)
    for i in range(n):
        for _ in range(6):
            cy, cx = g.uniform(0.2, 0.8, 2) * size
            ry, rx = g.uniform(0.05, 0.25, 2) * size
            out[i, 0][((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1] += g.uniform(0.1, 0.5)
    return torch.from_numpy(np.clip(out, 0, 1))
