"""The same results on a CUDA device as on the CPU (noise drawn from a CPU generator)."""

from __future__ import annotations

import pytest
import torch

from medsr.degradations import (
    bicubic_downscale,
    ct_sparse_view,
    default_degradation,
    kspace_truncate,
    radiograph,
    thick_slice,
    ultrasound_lateral,
)
from medsr.training.config import DegradationConfig
from medsr.training.data import build_degradation

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize(
    ("fn", "atol"),
    [
        (lambda x, g: bicubic_downscale(x, 2, blur_sigma=1.0), 1e-3),
        (lambda x, g: kspace_truncate(x, 2, window="hamming", noise_sigma=0.01, generator=g), 1e-3),
        # values in HU (about ±1000): float32 filtered back-projection differs between the GPU
        # and the CPU by up to 0.025 HU (seen on an H200), far below CT noise
        (lambda x, g: ct_sparse_view(x * 1000 - 1000, view_step=4, i0=1e5, generator=g), 0.1),
        (lambda x, g: radiograph(x, 2, sigma=0.7, dose=1e3, generator=g), 1e-3),
        (lambda x, g: ultrasound_lateral(x, 2), 1e-3),
        (lambda x, g: thick_slice(x, 2, axis=-2), 1e-3),
        (lambda x, g: default_degradation("MR", 2)(x, generator=g), 1e-3),
    ],
)
def test_cuda_matches_cpu(fn, atol, shapes):
    cpu = fn(shapes, torch.Generator().manual_seed(0))
    gpu = fn(shapes.cuda(), torch.Generator().manual_seed(0))
    assert gpu.is_cuda
    torch.testing.assert_close(gpu.cpu(), cpu, atol=atol, rtol=1e-3)


@pytest.mark.parametrize("modality", ["MR", "CT", "CR", "US"])
def test_training_pipeline_with_a_cuda_generator(modality, shapes):
    """Training draws its degradations with a generator on the GPU (medsr.training.data): every
    modality's pipeline, including the choice between plain bicubic and the physics, runs there."""
    g = torch.Generator(device="cuda").manual_seed(0)
    x = shapes.cuda()
    if modality == "CT":
        x = x * 1000 - 1000
    pipeline = build_degradation(
        DegradationConfig(kind="default", params={"bicubic_fraction": 0.5}), 2, modality
    )
    y = pipeline(x, generator=g)
    assert y.is_cuda and y.shape[-1] == x.shape[-1] // 2 and torch.isfinite(y).all()
