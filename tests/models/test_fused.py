"""A convolution with its pointwise step in one oneDNN pass (medsr.models.fused): the same values as
the separate steps, only where it applies, and RLFN through it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medsr.models.efficient import RLFN
from medsr.models.fused import conv_pointwise, conv_to_bf16, folded, fusion_available

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.skipif(
        not fusion_available(), reason="this PyTorch has no oneDNN fused convolution"
    ),
]

CL = torch.channels_last


def _onednn_bf16() -> bool:
    """Whether this CPU runs oneDNN's bf16 convolutions (AVX-512 at least: an AVX2-only AMD EPYC
    does not, and there the fused bf16 steps fall back to the separate ones, which other tests
    check)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


needs_onednn_bf16 = pytest.mark.skipif(
    not _onednn_bf16(), reason="this CPU has no oneDNN bf16 convolution (needs AVX-512)"
)


def _conv(cin: int, cout: int, k: int, seed: int = 0) -> nn.Conv2d:
    torch.manual_seed(seed)
    return nn.Conv2d(cin, cout, k, padding=k // 2).to(memory_format=CL)


def _input(c: int, size: int = 40, seed: int = 1) -> torch.Tensor:
    return torch.randn(1, c, size, size + 6, generator=torch.Generator().manual_seed(seed)).to(
        memory_format=CL
    )


@pytest.mark.parametrize(
    ("unary", "scalars", "step"),
    [
        ("leaky_relu", (0.05,), lambda y: F.leaky_relu(y, 0.05)),
        ("sigmoid", (), torch.sigmoid),
        ("none", (), lambda y: y),
    ],
)
def test_fp32_is_the_separate_steps(unary, scalars, step):
    conv, x = _conv(12, 10, 3), _input(12)
    with torch.inference_mode():
        ref = step(conv(x))
        out = conv_pointwise(conv, x, unary, scalars)
    assert out is not None and out.dtype == torch.float32 and out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_the_skip_add():
    conv, x = _conv(12, 10, 1), _input(12)
    skip = _input(10, seed=2)
    with torch.inference_mode():
        out = conv_pointwise(conv, x, add=skip)
        torch.testing.assert_close(out, conv(x) + skip, rtol=1e-5, atol=1e-5)
        assert conv_pointwise(conv, x, add=skip.bfloat16()) is None  # a dtype it would not keep


@needs_onednn_bf16
def test_bf16_under_autocast_rounds_once():
    """Under CPU autocast the input is cast as autocast casts a convolution's, and the result is
    bf16 — no further from the fp32 result than the separate bf16 steps are."""
    conv, x = _conv(12, 10, 3), _input(12)
    with torch.inference_mode():
        exact = F.leaky_relu(conv(x), 0.05)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            apart = F.leaky_relu(conv(x), 0.05)
            fused = conv_pointwise(conv, x, "leaky_relu", (0.05,))
    assert fused is not None and fused.dtype == apart.dtype == torch.bfloat16
    err_fused = float((fused.float() - exact).abs().max())
    err_apart = float((apart.float() - exact).abs().max())
    assert err_fused <= err_apart * 1.01 + 1e-6


def test_only_where_it_applies():
    conv, x = _conv(8, 8, 3), _input(8)
    assert conv_pointwise(conv, x.contiguous(), "sigmoid") is None  # not channels-last
    with torch.no_grad():
        assert conv_pointwise(conv, x, "sigmoid") is not None
    assert conv_pointwise(conv, x, "sigmoid") is None  # autograd on: training keeps the modules
    grouped = nn.Conv2d(8, 8, 3, padding=1, groups=2).to(memory_format=CL)
    reflect = nn.Conv2d(8, 8, 3, padding=1, padding_mode="reflect").to(memory_format=CL)
    with torch.inference_mode():
        assert conv_pointwise(grouped, x, "sigmoid") is None
        assert conv_pointwise(reflect, x, "sigmoid") is None


def test_new_weights_are_used():
    """The weights reordered once are made again when the module's weights change in place (an
    optimiser step, ``load_state_dict``)."""
    conv, x = _conv(8, 8, 3), _input(8)
    with torch.inference_mode():
        first = conv_pointwise(conv, x)
    with torch.no_grad():
        conv.weight.mul_(2.0)
        conv.bias.zero_()
    with torch.inference_mode():
        torch.testing.assert_close(conv_pointwise(conv, x), conv(x), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(conv_pointwise(conv, x), first)


@needs_onednn_bf16
def test_a_new_bias_alone_is_used():
    """The bias is part of what is cached (a bf16 copy of it under autocast; the split head's):
    changing it alone in place makes them again."""
    conv, x = _conv(8, 8, 3), _input(8)
    head = _conv(1, 8, 3)
    x1 = _input(1)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        first = conv_pointwise(conv, x)
        first_head = conv_to_bf16(head, x1)
    with torch.no_grad():
        conv.bias.add_(1.0)
        head.bias.add_(1.0)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        torch.testing.assert_close(
            conv_pointwise(conv, x).float(), first.float() + 1.0, rtol=2**-7, atol=0.05
        )
        torch.testing.assert_close(
            conv_to_bf16(head, x1).float(), first_head.float() + 1.0, rtol=2**-7, atol=0.05
        )


@needs_onednn_bf16
@pytest.mark.parametrize(("cin", "scale"), [(1, 1.0), (3, 1.0), (1, 3000.0)])
def test_conv_to_bf16_is_the_fp32_convolution_rounded_once(cin, scale):
    """An fp32 input's convolution in bf16 arithmetic (input and weights split into high and
    low bf16 parts): the fp32 convolution rounded to bf16 — its value within one bf16 rounding
    of the exact (float64) one at every pixel, and equal to the fp32 result's rounding at all but
    a few boundary cases, which lie one bf16 ulp apart. Intensities of any magnitude (a CT in
    HU): the plain bf16 convolution of them is far off."""
    torch.manual_seed(cin)
    conv = nn.Conv2d(cin, 24, 3, padding=1).to(memory_format=CL)
    with torch.no_grad():
        conv.weight.normal_(0.0, 0.5)
        conv.bias.normal_(0.0, 0.3)
    x = (torch.rand(2, cin, 40, 46, generator=torch.Generator().manual_seed(5)) * scale).to(
        memory_format=CL
    )
    with torch.inference_mode():
        out = conv_to_bf16(conv, x)
        fp32 = conv(x)
        exact = F.conv2d(x.double(), conv.weight.double(), conv.bias.double(), padding=1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            plain = conv(x)  # autocast: input and weights rounded to bf16 first
    assert out is not None and out.dtype == torch.bfloat16 and out.shape == fp32.shape
    # half a bf16 ulp is at most 2^-8 of the value; the split's own error (2^-16 of the terms'
    # magnitudes) matters only where the terms cancel
    terms = F.conv2d(
        x.double().abs(), conv.weight.double().abs(), conv.bias.double().abs(), padding=1
    )
    half_ulp = exact.abs() * 2.0**-8 + terms * 2.0**-16
    assert bool(((out.double() - exact).abs() <= half_ulp).all())
    rounded = fp32.bfloat16()
    differs = out != rounded
    assert float(differs.float().mean()) < 0.01
    assert bool(((out.double() - rounded.double()).abs()[differs] <= 4 * half_ulp[differs]).all())
    # plain bf16 (input and weights rounded first) misses the fp32 result's rounding far more often
    assert float((plain != rounded).float().mean()) > 10 * max(float(differs.float().mean()), 1e-3)


@needs_onednn_bf16
def test_conv_to_bf16_only_where_it_applies():
    conv, x = _conv(1, 8, 3), _input(1)
    with torch.inference_mode():
        assert conv_to_bf16(conv, x) is not None
        assert conv_to_bf16(conv, x.bfloat16()) is None  # an fp32 input only
        assert conv_to_bf16(_conv(3, 8, 3), _input(3).contiguous()) is None  # not channels-last
    assert conv_to_bf16(conv, x) is None  # autograd on
    with torch.inference_mode():
        first = conv_to_bf16(conv, x)
    with torch.no_grad():
        conv.weight.mul_(2.0)
    with torch.inference_mode():  # new weights are split and reordered again
        torch.testing.assert_close(conv_to_bf16(conv, x).float(), conv(x), rtol=2**-7, atol=1e-3)
        assert not torch.equal(conv_to_bf16(conv, x), first)


def test_rlfn_head_in_bf16_to_fp32_accuracy(monkeypatch):
    """Under bf16 autocast with no block kept in fp32, RLFN's head makes its features in bf16
    directly (:func:`conv_to_bf16`); with blocks in fp32 it stays an fp32 convolution."""
    import medsr.models.efficient as efficient

    calls = []
    real = efficient.conv_to_bf16
    monkeypatch.setattr(efficient, "conv_to_bf16", lambda conv, x: calls.append(1) or real(conv, x))
    torch.manual_seed(0)
    net = RLFN(num_features=16, num_blocks=2, scale=2, esa_spread="fixed", global_residual=True)
    for p in net.parameters():
        p.data.normal_(0.0, 0.2)
    net = net.eval().to(memory_format=CL)
    x = torch.rand(1, 1, 48, 54).to(memory_format=CL)
    with torch.inference_mode():
        ref = net.detail(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            one = net.detail(x, fp32_blocks=0)
            assert len(calls) == 1
            net.detail(x, fp32_blocks=1)
            assert len(calls) == 1
            monkeypatch.setattr(efficient, "conv_to_bf16", lambda conv, x: None)
            cast = net.detail(x, fp32_blocks=0)  # the fp32 head, its features cast to bf16
    rms = lambda d: float(d.float().pow(2).mean().sqrt())  # noqa: E731
    assert rms(one.float() - ref) <= 1.1 * rms(cast.float() - ref)


@pytest.mark.parametrize(("kernel", "stride"), [(1, 1), (3, 2), (3, 1)])
def test_folded_is_the_two_convolutions(kernel, stride):
    """A 1×1 convolution folded into an unpadded one after it: the same values (fp32, to
    rounding), made again when either's weights change; only where that holds."""
    torch.manual_seed(kernel * 10 + stride)
    first = nn.Conv2d(12, 8, 1).to(memory_format=CL)
    second = nn.Conv2d(8, 6, kernel, stride=stride, padding=0).to(memory_format=CL)
    x = _input(12)
    with torch.inference_mode():
        both = folded(first, second, x)
        assert both is not None and both.kernel_size == (kernel, kernel)
        ref = second(first(x))
        torch.testing.assert_close(conv_pointwise(both, x), ref, rtol=1e-5, atol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # folded in fp32 all the same
            assert folded(first, second, x).weight.dtype == torch.float32
    with torch.no_grad():
        first.weight.mul_(-1.5)
        second.bias.add_(1.0)
    with torch.inference_mode():
        again = folded(first, second, x)
        torch.testing.assert_close(conv_pointwise(again, x), second(first(x)), rtol=1e-5, atol=1e-5)
        padded = nn.Conv2d(8, 6, 3, padding=1).to(memory_format=CL)  # padding would read 0, not b₁
        assert folded(first, padded, x) is None
        assert folded(second, first, x) is None  # the first is not 1×1
        assert folded(first, second, x.contiguous()) is None  # not channels-last
    assert folded(first, second, x) is None  # autograd on


@pytest.mark.parametrize("spread", ["fixed", "stretch"])
def test_rlfn_in_inference_is_its_training_forward(spread):
    """RLFN's blocks and attention run through the fused steps in inference: the same output as
    with autograd on (its modules step by step), to fp32 rounding; in bf16 as close to fp32 as
    the separate bf16 steps."""
    torch.manual_seed(0)
    net = RLFN(num_features=16, num_blocks=2, scale=2, esa_spread=spread, global_residual=True)
    for p in net.parameters():  # a trained network's weights are not near zero
        p.data.normal_(0.0, 0.2)
    net = net.eval().to(memory_format=CL)
    x = torch.rand(1, 1, 48, 54).to(memory_format=CL)
    with torch.enable_grad():
        stepwise = net.detail(x).detach()
    with torch.inference_mode():
        fused = net.detail(x)
    torch.testing.assert_close(fused, stepwise, rtol=1e-4, atol=1e-4 * float(stepwise.abs().max()))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with torch.enable_grad():
            apart = net.detail(x).detach().float()
        with torch.inference_mode():
            one = net.detail(x).float()
    rms = lambda d: float(d.pow(2).mean().sqrt())  # noqa: E731
    assert rms(one - stepwise) <= 1.5 * rms(apart - stepwise) + 1e-6


@pytest.mark.parametrize("model", ["fast-x2", "default-x4"])
def test_shipped_models_through_the_fused_steps(model, monkeypatch):
    """What ``medsr upscale`` runs (channels-last on the CPU) gives a shipped RLFN's output with
    the fused steps as without them: fp32 to rounding; its bf16 recipe as close to fp32 as the
    separate bf16 steps are (RMS)."""
    import medsr.models.fused as fused
    from medsr.inference.planes import PlaneUpscaler

    scale = int(model[-1])
    x = torch.rand(1, 1, 64, 72, generator=torch.Generator().manual_seed(3)).cumsum(-1).cumsum(-2)
    x = x / x.max()

    def run(precision: str, on: bool) -> torch.Tensor:
        monkeypatch.setattr(fused, "_AVAILABLE", on)
        up = PlaneUpscaler(model, scale, precision=precision)
        with torch.inference_mode():
            return up.forward_tensor(up._to_device(x.numpy()))[0]

    ref, new = run("fp32", False), run("fp32", True)
    torch.testing.assert_close(new, ref, rtol=0, atol=1e-5)
    rms = lambda d: float(d.pow(2).mean().sqrt())  # noqa: E731
    assert rms(run("bf16", True) - ref) <= 1.5 * rms(run("bf16", False) - ref) + 1e-6


def test_a_failing_fused_operator_falls_back_for_good(monkeypatch):
    """A oneDNN without one of the post-ops: the separate steps run, once and from then on, and
    RLFN's output is the same."""
    import medsr.models.fused as fused

    class Broken:
        def __getattr__(self, name):
            def fail(*args, **kwargs):
                raise RuntimeError("post-op not supported")

            return fail

    monkeypatch.setattr(fused, "_AVAILABLE", True)
    monkeypatch.setattr(fused, "_ops", lambda: Broken())
    conv, x = _conv(8, 8, 3), _input(8)
    with torch.inference_mode():
        assert conv_pointwise(conv, x, "sigmoid") is None
    assert fused._AVAILABLE is False
    net = (
        RLFN(num_features=8, num_blocks=1, scale=2, esa_spread="fixed").eval().to(memory_format=CL)
    )
    x1 = torch.rand(1, 1, 30, 30).to(memory_format=CL)
    monkeypatch.setattr(fused, "_AVAILABLE", True)
    with torch.inference_mode():
        out = net(x1)
    with torch.enable_grad():
        torch.testing.assert_close(out, net(x1).detach())


def test_a_reduced_dtype_that_fails_leaves_the_others_fused(monkeypatch):
    """oneDNN's fp16 convolution needs AVX-512 FP16 or AVX-NE-CONVERT: on an AMD EPYC without them
    an (emulated) fp16 pass raised, and the fallback turned the fused steps off for every dtype
    for the rest of the process (a later fp32 test found them gone). A failing fp16 operator now
    turns off fp16 alone; fp32 and bf16 stay fused."""
    import medsr.models.fused as fused

    real = fused._ops()

    class Fp16Fails:
        def __getattr__(self, name):
            op = getattr(real, name)

            class Call:
                def __call__(self, x, *args, **kwargs):
                    if x.dtype == torch.float16:
                        raise RuntimeError("fp16 path needs the cpu support avx512_fp16")
                    return op(x, *args, **kwargs)

                def __getattr__(self, attr):
                    return getattr(op, attr)

            return Call()

    monkeypatch.setattr(fused, "_AVAILABLE", True)
    monkeypatch.setattr(fused, "_FAILED_DTYPES", set())
    monkeypatch.setattr(fused, "_ops", lambda: Fp16Fails())
    conv, x = _conv(8, 8, 3), _input(8)
    with torch.inference_mode():
        with torch.autocast("cpu", dtype=torch.float16):
            assert conv_pointwise(conv, x, "sigmoid") is None
        assert fused._AVAILABLE is True and fused._FAILED_DTYPES == {torch.float16}
        out = conv_pointwise(conv, x, "sigmoid")
        assert out is not None and out.dtype == torch.float32
        if _onednn_bf16():  # where oneDNN has bf16 convolutions at all
            with torch.autocast("cpu", dtype=torch.bfloat16):
                assert conv_pointwise(conv, x, "sigmoid").dtype == torch.bfloat16
        with torch.autocast("cpu", dtype=torch.float16):
            assert conv_pointwise(conv, x, "sigmoid") is None  # not tried again


def test_a_model_loaded_in_inference_mode_is_fused(monkeypatch):
    """Weights made under ``torch.inference_mode`` (a service that loads its models there) carry
    no version counter: they are reordered all the same, and the fused steps stay on."""
    import medsr.models.fused as fused

    monkeypatch.setattr(fused, "_AVAILABLE", True)
    with torch.inference_mode():
        conv, x = _conv(8, 8, 3), _input(8)
        assert conv.weight.is_inference()
        out = conv_pointwise(conv, x, "sigmoid")
        assert out is not None and fused._AVAILABLE
        torch.testing.assert_close(out, torch.sigmoid(conv(x)), rtol=1e-5, atol=1e-5)


def test_one_reordered_weight_serves_every_plane_size():
    """The weights are reordered once per dtype, whatever the plane sizes that follow (tiles, a
    series of differently sized images): the same values as the separate steps at each."""
    conv = _conv(8, 8, 3)
    with torch.inference_mode():
        for size in (40, 17, 64, 5):
            x = _input(8, size=size, seed=size)
            out = conv_pointwise(conv, x, "leaky_relu", (0.05,))
            torch.testing.assert_close(out, F.leaky_relu(conv(x), 0.05), rtol=1e-5, atol=1e-5)
    assert len(conv.__dict__["_medsr_packed"]) == 1
