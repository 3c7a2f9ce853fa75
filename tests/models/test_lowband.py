"""Low-band fidelity by construction (medsr.models.lowband): property tests over random images,
intensity ranges from 0–1 to ±30,000, every shipped in-plane model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

import medsr
from medsr.image import MedImage
from medsr.models.lowband import _fft_axis, dct_basis, low_band, low_band_size, project_low_band
from medsr.models.resolver import list_pretrained

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SHIPPED = [m.name for m in list_pretrained(kind="in-plane")]


def _band(arr: np.ndarray, scale: int) -> np.ndarray:
    return low_band(torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float64)), scale).numpy()


def test_projection_is_an_orthogonal_projection():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1, 40, 56, generator=g, dtype=torch.float64)
    p = low_band(x, 2)
    torch.testing.assert_close(low_band(p, 2), p)  # P² = P
    torch.testing.assert_close((p * (x - p)).sum(), torch.tensor(0.0, dtype=torch.float64))  # ⟂
    base = torch.randn(2, 1, 40, 56, generator=g, dtype=torch.float64)
    out = project_low_band(x, base, 2)
    torch.testing.assert_close(low_band(out, 2), low_band(base, 2))  # the low band is base's
    assert low_band_size(56, 2) == 14 and low_band_size(56, 4) == 7  # half the input's Nyquist


def _dense_low_band(x: torch.Tensor, scale: int) -> torch.Tensor:
    """The definition, with the basis matrices on both axes (float64)."""
    h, w = x.shape[-2:]
    by = dct_basis(h, low_band_size(h, scale), dtype=torch.float64)
    bx = dct_basis(w, low_band_size(w, scale), dtype=torch.float64)
    return by @ (by.T @ x.double() @ bx) @ bx.T


def test_long_axes_take_the_fft_when_it_is_the_faster():
    assert _fft_axis(1024, 256) and _fft_axis(1280, 320) and _fft_axis(3800, 950)  # 3800 = 2³·5²·19
    assert not _fft_axis(256, 64)  # short: the matrices are faster
    assert not _fft_axis(1023, 255)  # odd length
    assert not _fft_axis(1202, 300)  # 1202 = 2·601: a large prime factor
    assert not _fft_axis(1024, 513)  # more than half the axis kept


@settings(max_examples=12, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 2**31 - 1),
    size=st.tuples(st.integers(150, 560), st.integers(150, 560)),
    scale=st.sampled_from([2, 4]),
    batch=st.sampled_from([(), (1, 1), (2, 3)]),
)
@example(seed=0, size=(512, 640), scale=2, batch=(1, 1))  # both axes by FFT (a CT / US output)
@example(seed=1, size=(601, 300), scale=2, batch=())  # rows 1202 = 2·601: matrices; columns FFT
@example(
    seed=2, size=(150, 601), scale=4, batch=(2,)
)  # rows 600: FFT; columns 2404 = 4·601: matrices
def test_the_fft_route_is_the_same_projection(seed, size, scale, batch):
    """Planes whose axes take the FFT (one or both) give the definition's projection: in float64
    to 1e-10 of the input's magnitude, in float32 to 2e-6 of it."""
    h, w = size[0] * scale, size[1] * scale
    x = torch.randn(
        *batch, h, w, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )
    ref = _dense_low_band(x, scale)
    mag = float(x.abs().max())
    p = low_band(x, scale)  # computed once for both checks (planes up to 2240² in float64)
    assert float((p - ref).abs().max()) <= 1e-10 * mag
    assert float((low_band(x.float(), scale).double() - ref).abs().max()) <= 2e-6 * mag
    torch.testing.assert_close(low_band(p, scale), p, rtol=0, atol=1e-10 * mag)  # P² = P
    # in place (``out`` = the prediction: the last synthesis subtracted where its samples
    # belong) or into another tensor: the same numbers as the projection's new tensor
    base = torch.randn(
        x.shape, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64
    )
    for dtype in (torch.float64, torch.float32):
        pred, b = x.to(dtype), base.to(dtype)
        ref = project_low_band(pred, b, scale)
        inplace = pred.clone()
        assert project_low_band(inplace, b, scale, out=inplace) is inplace
        assert torch.equal(inplace, ref)
        assert torch.equal(project_low_band(pred, b, scale, out=torch.empty_like(pred)), ref)
    with pytest.raises(ValueError, match="out must be"):
        project_low_band(x, base, scale, out=torch.empty_like(x, dtype=torch.float32))


@pytest.mark.parametrize("model", SHIPPED)
@settings(max_examples=4, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 2**31 - 1),
    shape=st.tuples(st.integers(12, 28), st.integers(12, 28)),
    span=st.sampled_from([1.0, 255.0, 4095.0, 60000.0]),
    offset=st.sampled_from([0.0, -1024.0, -30000.0]),
    modality=st.sampled_from(["MR", "CT", "US"]),
)
def test_every_shipped_model_keeps_the_base_low_band(model, seed, shape, span, offset, modality):
    """The output's low band equals bicubic's, whatever the image, its range or modality."""
    scale = int(medsr.load_pretrained(model)[1]["scale"])
    rng = np.random.default_rng(seed)
    smooth = rng.normal(size=shape).cumsum(0).cumsum(1)  # structure at every scale
    arr = smooth - smooth.min()
    arr = (offset + span * arr / max(arr.max(), 1e-9)).astype(np.float32)[None]
    img = MedImage(arr, spacing=(1.0, 1.0, 1.0), modality=modality)
    out = medsr.upscale(img, scale, model, clip=False).array[0]
    base = medsr.upscale(img, scale, "bicubic", clip=False).array[0]
    diff = np.abs(_band(out, scale) - _band(base, scale)).max()
    assert diff <= 2e-5 * span + 1e-6 * abs(offset), (diff, span)
    # ... while the model still adds detail above the band (it is not bicubic)
    assert np.abs(out - base).max() > 0


@pytest.mark.parametrize("model", SHIPPED)
def test_affine_intensity_equivariance_holds(model, rng):
    """Scale the input by a and shift it by b: the output does the same (minmax-normalised
    modalities), with the low-band projection in place."""
    scale = int(medsr.load_pretrained(model)[1]["scale"])
    arr = rng.uniform(0, 1, (1, 20, 24)).astype(np.float32)
    a, b = 12.0, -3000.0
    one = medsr.upscale(MedImage(arr, modality="MR"), scale, model, clip=False).array
    two = medsr.upscale(MedImage(a * arr + b, modality="MR"), scale, model, clip=False).array
    np.testing.assert_allclose(two, a * one + b, atol=3e-6 * a * 1.0 + 1e-3)


def test_low_band_off_gives_the_bare_network():
    from medsr.inference.planes import PlaneUpscaler

    img = MedImage(
        np.random.default_rng(1).uniform(0, 1, (1, 16, 16)).astype(np.float32), modality="MR"
    )
    guarded = PlaneUpscaler("default-x2", 2).upscale(img)
    bare = PlaneUpscaler("default-x2", 2, low_band=False).upscale(img)
    assert guarded.meta["derivation"]["low_band"] == {"base": "bicubic", "cutoff": 0.5}
    assert "low_band" not in bare.meta["derivation"]
    assert not np.array_equal(guarded.array, bare.array)


def test_cached_basis_serves_inference_then_training():
    """The DCT bases are cached: one first made under inference_mode still trains."""
    from medsr.models.lowband import low_band

    x = torch.rand(1, 1, 24, 28)
    with torch.inference_mode():
        low_band(x, 2)
    y = x.clone().requires_grad_(True)
    low_band(y, 2).sum().backward()
    assert y.grad is not None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_fft_route_on_cuda_matches_the_cpu():
    """The projection on a GPU (cuFFT for the long axes, the matrices for the short one) is the
    CPU's to float rounding, with a batch of planes and a ×4 plane whose rows take the matrices."""
    g = torch.Generator().manual_seed(5)
    for shape, scale in (((3, 1, 1024, 1280), 2), ((1, 1, 600, 2048), 4)):
        x = torch.randn(*shape, generator=g)
        ref = low_band(x, scale)
        got = low_band(x.cuda(), scale).cpu()
        assert float((got - ref).abs().max()) <= 2e-6 * float(x.abs().max())
