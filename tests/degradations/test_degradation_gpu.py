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

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize(
    "fn",
    [
        lambda x, g: bicubic_downscale(x, 2, blur_sigma=1.0),
        lambda x, g: kspace_truncate(x, 2, window="hamming", noise_sigma=0.01, generator=g),
        lambda x, g: ct_sparse_view(x * 1000 - 1000, view_step=4, i0=1e5, generator=g),
        lambda x, g: radiograph(x, 2, sigma=0.7, dose=1e3, generator=g),
        lambda x, g: ultrasound_lateral(x, 2),
        lambda x, g: thick_slice(x, 2, axis=-2),
        lambda x, g: default_degradation("MR", 2)(x, generator=g),
    ],
)
def test_cuda_matches_cpu(fn, shapes):
    cpu = fn(shapes, torch.Generator().manual_seed(0))
    gpu = fn(shapes.cuda(), torch.Generator().manual_seed(0))
    assert gpu.is_cuda
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-3, rtol=1e-3)
