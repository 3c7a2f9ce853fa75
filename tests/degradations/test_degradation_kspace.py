"""MR k-space truncation: exact centre of k-space, zero-filled peer, windows, Rician noise."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medsr.degradations import (
    RandomKSpace,
    centered_fft2,
    centered_ifft2,
    kspace_truncate,
    kspace_upsample,
)
from medsr.errors import InvalidParameterError


def _block(k: torch.Tensor, h: int, w: int) -> torch.Tensor:
    H, W = k.shape[-2:]
    y0, x0 = H // 2 - h // 2, W // 2 - w // 2
    return k[..., y0 : y0 + h, x0 : x0 + w]


def test_centered_fft_roundtrip():
    x = torch.rand(2, 1, 15, 16, dtype=torch.float64)
    torch.testing.assert_close(centered_ifft2(centered_fft2(x)).real, x)
    k = centered_fft2(torch.ones(1, 1, 8, 9, dtype=torch.float64))
    assert k[0, 0, 4, 4].real == pytest.approx(72.0)  # DC at (H//2, W//2)


@pytest.mark.parametrize("shape,f", [((64, 64), 2), ((64, 48), 4), ((63, 60), 3), ((66, 62), 2)])
def test_shape(shape, f):
    y = kspace_truncate(torch.rand(2, 3, *shape), f)
    assert y.shape == (2, 3, shape[0] // f, shape[1] // f)
    assert y.dtype == torch.float32


@pytest.mark.parametrize("shape,f", [((64, 64), 2), ((64, 48), 4), ((60, 63), 3)])
def test_keeps_the_centre_of_kspace_exactly(phantom64, shape, f):
    x = torch.from_numpy(np.resize(phantom64, shape)).double()[None, None]
    x = x + 0.1 * torch.rand(
        x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )
    H, W = shape
    h, w = H // f, W // f
    hr_k = centered_fft2(x)
    lr = kspace_truncate(x, f, grid="fft", output="complex")
    torch.testing.assert_close(centered_fft2(lr), _block(hr_k, h, w) / f**2, rtol=1e-9, atol=1e-9)
    # cell-centred grid: same magnitudes, a known linear phase (a sub-pixel shift)
    lr_cell = kspace_truncate(x, f, output="complex")
    torch.testing.assert_close(
        centered_fft2(lr_cell).abs(), _block(hr_k, h, w).abs() / f**2, rtol=1e-9, atol=1e-9
    )


@pytest.mark.parametrize("grid", ["cell", "fft"])
@pytest.mark.parametrize("f", [2, 3])
def test_upsample_is_the_exact_peer(grid, f):
    g = torch.Generator().manual_seed(1)
    y = torch.complex(
        torch.randn(2, 1, 12, 10, generator=g), torch.randn(2, 1, 12, 10, generator=g)
    )
    y = y.to(torch.complex128)
    up = kspace_upsample(y, f, grid=grid, output="complex")
    assert up.shape == (2, 1, 12 * f, 10 * f)
    back = kspace_truncate(up, f, grid=grid, output="complex")
    torch.testing.assert_close(back, y, rtol=1e-10, atol=1e-10)
    # and f² × the adjoint: <A x, y> = <x, upsample(y) / f²>
    x = torch.complex(
        torch.randn(2, 1, 12 * f, 10 * f, generator=g),
        torch.randn(2, 1, 12 * f, 10 * f, generator=g),
    ).to(torch.complex128)
    ax = kspace_truncate(x, f, grid=grid, output="complex")
    lhs = torch.sum(ax * y.conj())
    rhs = torch.sum(x * (up / f**2).conj())
    assert abs(lhs - rhs) < 1e-9 * abs(lhs)


def test_constant_and_mean_preserved(phantom64):
    c = torch.full((1, 1, 32, 32), 0.7)
    torch.testing.assert_close(kspace_truncate(c, 2), torch.full((1, 1, 16, 16), 0.7))
    x = torch.from_numpy(phantom64)[None, None]
    y = kspace_truncate(x, 2, output="real")
    assert float(y.mean()) == pytest.approx(float(x.mean()), rel=1e-5)


@pytest.mark.parametrize("f", [2, 3, 4])
def test_cell_grid_has_no_shift(f):
    # a smooth blob's centroid must land where MedImage.resampled says LR pixels are
    n = 48
    yy, xx = torch.meshgrid(torch.arange(float(n)), torch.arange(float(n)), indexing="ij")
    blob = torch.exp(-((yy - 21.3) ** 2 + (xx - 26.8) ** 2) / (2 * 5.0**2))[None, None]

    def centroid_hr(img: torch.Tensor, factor: int) -> tuple[float, float]:
        m = img[0, 0].double()
        j = torch.arange(m.shape[0], dtype=torch.float64) * factor + (factor - 1) / 2
        i = torch.arange(m.shape[1], dtype=torch.float64) * factor + (factor - 1) / 2
        s = m.sum()
        return float((m.sum(1) * j).sum() / s), float((m.sum(0) * i).sum() / s)

    cy, cx = centroid_hr(blob, 1)
    ly, lx = centroid_hr(kspace_truncate(blob, f), f)
    assert abs(ly - cy) < 0.03 and abs(lx - cx) < 0.03  # vs. δ ≥ 0.5 px below
    # the scanner ("fft") convention is offset by δ = f·(h//2) + (f−1)/2 − H//2 HR pixels
    fy, fx = centroid_hr(kspace_truncate(blob, f, grid="fft"), f)
    h = n // f
    delta = f * (h // 2) + (f - 1) / 2 - n // 2
    assert fy == pytest.approx(cy + delta, abs=0.03)
    assert fx == pytest.approx(cx + delta, abs=0.03)


def test_windows_reduce_gibbs_ringing():
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    x = (((yy - 31.7) ** 2 + (xx - 30.2) ** 2) <= 15.3**2).float()[None, None]
    plain = kspace_truncate(x, 2)
    overshoot = float(plain.max()) - 1.0
    assert overshoot > 0.1  # Gibbs ringing of a sharp disk
    assert float(kspace_truncate(x, 2, window="hamming").max()) - 1.0 < 0.1 * overshoot
    hann = kspace_truncate(x, 2, window="tukey", tukey_alpha=1.0)
    assert float(hann.max()) - 1.0 < 0.1 * overshoot
    assert float(kspace_truncate(x, 2, window="tukey", tukey_alpha=0.5).max()) - 1 < overshoot
    for window in ("hamming", "tukey"):  # windows are 1 at DC: the mean is kept
        real = kspace_truncate(x, 2, window=window, output="real")
        assert float(real.mean()) == pytest.approx(float(x.mean()), rel=1e-5)


def test_rician_noise_statistics():
    sigma = 0.05
    zero = torch.zeros(4, 1, 64, 64)
    mag = kspace_truncate(zero, 2, noise_sigma=sigma, generator=0)
    # background of a magnitude image is Rayleigh: mean σ·√(π/2)
    assert float(mag.mean()) == pytest.approx(sigma * math.sqrt(math.pi / 2), rel=0.03)
    real = kspace_truncate(
        torch.full((4, 1, 64, 64), 0.5), 2, noise_sigma=sigma, output="real", generator=0
    )
    assert float(real.std()) == pytest.approx(sigma, rel=0.03)
    assert float(real.mean()) == pytest.approx(0.5, abs=0.003)


def test_noise_determinism_and_wrapper(phantom64):
    x = torch.from_numpy(phantom64)[None, None].repeat(3, 1, 1, 1)
    a = kspace_truncate(x, 2, noise_sigma=0.02, generator=5)
    b = kspace_truncate(x, 2, noise_sigma=0.02, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, kspace_truncate(x, 2, noise_sigma=0.02, generator=6))
    deg = RandomKSpace(2, window=[None, "hamming", "tukey"], noise_sigma=(0.0, 0.05))
    torch.testing.assert_close(deg(x, generator=1), deg(x, generator=1))
    assert deg(x, generator=1).shape == (3, 1, 32, 32)


def test_bad_parameters():
    x = torch.rand(1, 1, 16, 16)
    with pytest.raises(InvalidParameterError):
        kspace_truncate(x, 2, window="kaiser")
    with pytest.raises(InvalidParameterError):
        kspace_truncate(x, 2, grid="corner")
    with pytest.raises(InvalidParameterError):
        kspace_truncate(x, 2, output="phase")
    with pytest.raises(InvalidParameterError):
        kspace_truncate(x, 2, noise_sigma=-1)


# --------------------------------------------------- the geometry degrade_image reports, per grid
def _world_field(shape: tuple[int, int, int], affine: np.ndarray, fov: tuple[float, float]):
    """A band-limited field of the world position (one and two cycles over the field of view
    ``fov`` = (y, x) mm, far below the LR Nyquist frequency), sampled at the voxel centres of a
    grid: what any correct simulation of the same field of view must sample."""
    zz, yy, xx = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    ijk = np.stack([xx, yy, zz, np.ones_like(xx)], -1).astype(np.float64)
    world = ijk @ np.asarray(affine, dtype=np.float64).T
    fy, fx = fov
    return (
        50.0
        + np.cos(2 * math.pi * world[..., 0] / fx + 0.3)
        + np.sin(2 * math.pi * 2 * world[..., 1] / fy + 1.1)
    )


@pytest.mark.parametrize("grid", ["cell", "fft"])
@pytest.mark.parametrize(("y", "x", "f"), [(16, 20, 2), (18, 10, 2), (17, 13, 2), (24, 15, 3)])
def test_degrade_image_reports_where_the_samples_are(grid, y, x, f):
    """A band-limited field passes k-space truncation unchanged, so the LR image must equal the
    field at the voxel centres its header states, on either grid. Before, ``grid="fft"`` kept the
    cell-centred header of the other kinds: ``medsr degrade MR_small.dcm lr.dcm --kind kspace
    --param grid=fft`` wrote ImagePositionPatient −83.75 (the ``grid=cell`` value) for samples
    at −83.906 mm, half an HR pixel off (errors up to 0.5 on this field of range 4)."""
    from medsr.degradations import degrade_image
    from medsr.image import MedImage

    affine = np.diag([0.8, 1.1, 3.0, 1.0])
    affine[:3, 3] = [4.0, -7.0, 2.0]
    fov = ((y // f) * f * 1.1, (x // f) * f * 0.8)  # the field of view of the kept HR pixels
    hr = _world_field((1, y, x), affine, fov).astype(np.float32)
    img = MedImage(hr, spacing=(3.0, 1.1, 0.8), affine=affine, modality="MR")
    lr = degrade_image(img, "kspace", f, grid=grid)
    assert lr.array.shape == (1, y // f, x // f)
    want = _world_field(lr.array.shape, lr.affine, fov)
    np.testing.assert_allclose(lr.array, want, atol=1e-4)
