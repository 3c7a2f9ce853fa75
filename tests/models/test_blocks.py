"""Shared building blocks (medsr.models.blocks): the fast forms used in inference give the values
of the PyTorch operations they stand for, and RLFN under autocast sums in one dtype."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

from medsr.models.blocks import autocast_input, bilinear_upsample, pixel_shuffle
from medsr.models.efficient import RLFN

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CL = torch.channels_last


@settings(max_examples=30, deadline=None, derandomize=True)
@given(
    n=st.integers(1, 2),
    out=st.integers(1, 3),
    factor=st.integers(2, 4),
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    channels_last=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.bfloat16]),
)
def test_pixel_shuffle_is_pixel_shuffle(n, out, factor, h, w, channels_last, dtype):
    """Every layout and dtype: exactly ``F.pixel_shuffle``'s values, and its gradient."""
    x = torch.randn(n, out * factor**2, h, w, generator=torch.Generator().manual_seed(h * w)).to(
        dtype
    )
    if channels_last:
        x = x.contiguous(memory_format=CL)
    ref = F.pixel_shuffle(x, factor)
    got = pixel_shuffle(x, factor)
    assert got.shape == ref.shape and got.dtype == ref.dtype and torch.equal(got, ref)
    a = x.detach().clone().requires_grad_(True)
    b = x.detach().clone().requires_grad_(True)
    weight = torch.randn(ref.shape, generator=torch.Generator().manual_seed(1)).to(dtype)
    (F.pixel_shuffle(a, factor) * weight).sum().backward()
    (pixel_shuffle(b, factor) * weight).sum().backward()
    assert torch.equal(a.grad, b.grad)


def test_pixel_shuffle_keeps_its_error():
    with pytest.raises(RuntimeError):
        pixel_shuffle(torch.zeros(1, 6, 4, 4).contiguous(memory_format=CL), 2)


@pytest.mark.parametrize("factor", [2, 3, 4, 6])
@pytest.mark.parametrize("shape", [(1, 1), (2, 7), (13, 9), (40, 41)])
def test_bilinear_upsample_is_interpolate(factor, shape):
    """The attention's upsampling as a transposed convolution (inference on the CPU): the same
    as ``F.interpolate`` (bilinear, align_corners=False) to fp32 rounding, edges included, and
    in the input's dtype."""
    x = torch.randn(1, 3, *shape, generator=torch.Generator().manual_seed(factor)) * 100
    ref = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    with torch.inference_mode():
        out = bilinear_upsample(x.to(memory_format=CL), factor)
        low = bilinear_upsample(x.bfloat16(), factor)
    assert out.shape == ref.shape and out.dtype == torch.float32 and low.dtype == torch.bfloat16
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6 * 100 * max(shape) * factor)
    torch.testing.assert_close(low.float(), ref, rtol=2**-7, atol=0.5)
    assert torch.equal(bilinear_upsample(x, factor), ref)  # autograd on: interpolate itself


@pytest.mark.parametrize("factor", [3, 6])
@pytest.mark.parametrize(
    ("shape", "size"), [((5, 7), (40, 29)), ((5, 7), (12, 50)), ((14, 1), (84, 17))]
)
def test_bilinear_upsample_to_a_size(factor, shape, size):
    """With ``size``: the upsampling cropped, or its last row and column repeated out to
    ``size`` (ESA's fixed spread at sizes that are not multiples of 6), in inference as with
    autograd on (interpolate, padded and cropped)."""
    x = torch.randn(2, 3, *shape, generator=torch.Generator().manual_seed(sum(size))) * 100
    ref = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    ph, pw = max(0, size[0] - ref.shape[-2]), max(0, size[1] - ref.shape[-1])
    ref = F.pad(ref, (0, pw, 0, ph), mode="replicate")[..., : size[0], : size[1]]
    assert torch.equal(bilinear_upsample(x, factor, size), ref)
    with torch.inference_mode():
        out = bilinear_upsample(x.to(memory_format=CL), factor, size)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6 * 100 * max(size))


def test_autocast_input():
    x = torch.rand(1, 2, 3, 3)
    assert autocast_input(x) is x  # no autocast: itself
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = autocast_input(x)
        assert y.dtype == torch.bfloat16 and torch.equal(y, x.bfloat16())
        assert autocast_input(y) is y
        half = x.half()
        assert autocast_input(half) is half  # only fp32 is cast, as autocast does


class _Sums(TorchDispatchMode):
    """Records the dtypes of every elementwise sum."""

    def __init__(self) -> None:
        super().__init__()
        self.dtypes: list[tuple[torch.dtype, ...]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket in (torch.ops.aten.add, torch.ops.aten.add_):
            self.dtypes.append(tuple(a.dtype for a in args if isinstance(a, torch.Tensor)))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("fp32_blocks", [0, 1, 2])
@pytest.mark.parametrize("grad", [False, True])
def test_rlfn_under_autocast_sums_in_one_dtype(fp32_blocks, grad):
    """Under bf16 autocast RLFN's skips (each block's, the long one) add tensors of one dtype:
    the fp32 features of the head and of the blocks kept in fp32 are cast once, where a bf16 +
    fp32 sum took PyTorch's slow mixed-dtype path (and a cast back after it)."""
    torch.manual_seed(0)
    net = RLFN(num_features=8, num_blocks=2, scale=2, esa_spread="fixed", global_residual=True)
    for p in net.parameters():  # a trained network's weights are not near zero
        p.data.normal_(0.0, 0.2)
    net = net.eval().to(memory_format=CL)
    x = torch.rand(1, 1, 24, 30).to(memory_format=CL)
    sums = _Sums()
    with torch.set_grad_enabled(grad), torch.autocast("cpu", dtype=torch.bfloat16), sums:
        out = net.detail(x, fp32_blocks=fp32_blocks)
    assert out.dtype == torch.bfloat16 and out.shape == (1, 1, 48, 60)
    assert sums.dtypes, "no sum recorded"
    mixed = [d for d in sums.dtypes if len(set(d)) > 1]
    assert not mixed, mixed
    with torch.no_grad():
        ref = net.detail(x, fp32_blocks=fp32_blocks)  # fp32 throughout
    rel = float((out.detach().float() - ref).pow(2).mean().sqrt() / ref.pow(2).mean().sqrt())
    assert rel < 0.05
