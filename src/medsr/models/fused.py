"""A convolution and the pointwise step after it in one pass, for inference on the CPU.

RLFN (:mod:`medsr.models.efficient`) follows most of its 3×3 convolutions with a LeakyReLU and
its attention's last 1×1 convolution with a sigmoid; each of those is a separate pass over a
full-size feature map (46 × 512² values for ``default-x2``), memory-bound: on a 2-core Xeon
with AMX (bf16, channels-last) a 24-channel 512² LeakyReLU takes 2.1 ms after a 5.8 ms
convolution. oneDNN applies such a step inside the convolution, on the accumulator before it is
stored (a *post-op*): :func:`conv_pointwise` calls PyTorch's oneDNN convolution with one
(``torch.ops.mkldnn._convolution_pointwise``, what ``torch.compile`` emits for the same
pattern on the CPU) on weights reordered once into oneDNN's blocked layout.

Measured (``benchmarks/speed.py``, the network alone at 512², 2 Xeon cores, bf16): ``fast-x2``
89.7 → 73.0 ms, ``default-x2`` 371 → 321 ms; fp32 150 → 147 and 665 → 632 ms. The values are
those of the separate steps up to rounding: in bf16 the post-op works on the fp32 accumulator and
rounds once where the separate steps round twice (the change against fp32 on a CT slice: RMS
0.195 → 0.194 HU for ``fast-x2``, 0.112 → 0.111 for ``default-x2``); in fp32 the same to a few
ulps.

It applies only where it can: the CPU, no autograd (inference and validation; training keeps the
modules' own ``forward``), not inside ``torch.compile`` (which makes the same fusions itself), a
4-D channels-last input, a zero-padded ungrouped ``nn.Conv2d``, and a PyTorch built with oneDNN.
Anywhere else :func:`conv_pointwise` returns ``None`` and the caller runs its modules as they
are — and so everywhere in the process once the fused operator has failed (a oneDNN build
without one of the post-ops, a PyTorch whose private operator changed: logged once, never an
error). Under CPU autocast the input is cast
to the autocast dtype first, as autocast casts a convolution's input, and the weights are
reordered in that dtype.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

__all__ = ["conv_pointwise", "conv_to_bf16", "folded", "fusion_available"]

#: reordered weights kept per convolution (per dtype and weight version)
_MAX_PACKED = 4


def fusion_available() -> bool:
    """Whether this PyTorch has oneDNN's fused convolution for CPU tensors."""
    return bool(torch.backends.mkldnn.is_available()) and hasattr(
        torch.ops.mkldnn, "_convolution_pointwise"
    )


_AVAILABLE: bool | None = None


def _applies(conv: nn.Module, x: torch.Tensor) -> bool:
    global _AVAILABLE
    if _AVAILABLE is None:
        _AVAILABLE = fusion_available()
    return (
        _AVAILABLE
        and not torch.compiler.is_compiling()  # torch.compile fuses the same steps itself
        and x.device.type == "cpu"
        and not torch.is_grad_enabled()
        and x.dim() == 4
        and isinstance(conv, nn.Conv2d)
        and conv.padding_mode == "zeros"
        and conv.groups == 1
        and isinstance(conv.padding, tuple)  # not "same"/"valid"
        and x.is_contiguous(memory_format=torch.channels_last)
    )


def _state(*tensors: torch.Tensor | None) -> tuple[tuple[int, int], ...]:
    """What identifies the values of ``tensors`` (weights, biases) for a cache of what is made
    from them: each one's version counter and storage (tensors made under
    ``torch.inference_mode`` have no version counter, and only code in that mode can change them
    in place)."""
    return tuple(
        (0 if t.is_inference() else t._version, t.data_ptr()) for t in tensors if t is not None
    )


def _packed(
    conv: nn.Conv2d, dtype: torch.dtype, shape: tuple[int, ...], *, split: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``conv``'s weight in oneDNN's layout for ``dtype`` inputs (reordered for the first input
    ``shape`` seen; the same numbers for any other size, measured), and its bias; made once,
    again when the weight or the bias changes (:func:`_state`). ``split``: the bf16 weights
    ``[Wₕ, Wₕ, Wₗ, Wₗ]`` along the input channels and the fp32 bias of :func:`conv_to_bf16`."""
    key = (dtype, split, *_state(conv.weight, conv.bias))
    cache: dict[Any, Any] = conv.__dict__.setdefault("_medsr_packed", {})
    hit = cache.get(key)
    if hit is None:
        if len(cache) >= _MAX_PACKED:
            cache.clear()
        w = conv.weight.detach()
        if split:
            high = w.float().to(torch.bfloat16)
            low = (w.float() - high.float()).to(torch.bfloat16)
            dense = torch.cat((high, high, low, low), 1)
            bias = conv.bias.detach().float() if conv.bias is not None else None
        else:
            dense = w.to(dtype)
            bias = conv.bias.detach().to(dtype) if conv.bias is not None else None
        packed = torch.ops.mkldnn._reorder_convolution_weight(
            dense.contiguous(memory_format=torch.channels_last), *_geometry(conv), list(shape)
        )
        hit = cache[key] = (packed, bias)
    return hit


def _geometry(conv: nn.Conv2d) -> tuple[list[int], list[int], list[int], int]:
    """``conv``'s padding, stride, dilation and groups as oneDNN's operators take them (a
    numeric padding: :func:`_applies` refuses ``"same"``/``"valid"``)."""
    padding = conv.padding
    assert isinstance(padding, tuple)
    return list(padding), list(conv.stride), list(conv.dilation), conv.groups


#: reduced dtypes whose fused operators failed here (their separate steps run instead)
_FAILED_DTYPES: set[torch.dtype] = set()


def _unavailable(exc: BaseException, dtype: torch.dtype) -> None:
    """A fused operator failed (a build or CPU whose oneDNN lacks it, a PyTorch whose private
    operator changed): the separate steps run instead, for the rest of the process — for every
    dtype when an fp32 one failed, else for that dtype only (oneDNN's fp16 needs AVX-512 FP16 or
    AVX-NE-CONVERT: on an AMD EPYC without them an emulated fp16 pass turned the fp32 and bf16
    fusions off for the whole process)."""
    global _AVAILABLE
    if dtype == torch.float32:
        _AVAILABLE = False
    else:
        _FAILED_DTYPES.add(dtype)
    log.info(
        "fused convolutions unavailable here for %s (%s): the separate steps run instead",
        "any dtype" if dtype == torch.float32 else dtype,
        exc,
    )


#: what a failing or changed private operator raises
_FAILURES = (RuntimeError, NotImplementedError, TypeError, AttributeError)


def conv_pointwise(
    conv: nn.Module,
    x: torch.Tensor,
    unary: str = "none",
    scalars: tuple[float, ...] = (),
    *,
    add: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """``unary(conv(x))`` — or ``conv(x) + add`` — in one oneDNN pass, or ``None`` where it does
    not apply (see the module: the caller then runs ``conv`` and the step itself).

    ``unary``: oneDNN's name of the step (``"leaky_relu"`` with ``scalars=(slope,)``,
    ``"sigmoid"``, ``"none"``). ``add``: a tensor of the output's shape added to it instead (a
    skip connection; same dtype as the convolution's, else ``None``).
    """
    if not _applies(conv, x):
        return None
    if torch.is_autocast_enabled("cpu"):
        x = x.to(torch.get_autocast_dtype("cpu"))
    if x.dtype in _FAILED_DTYPES:
        return None
    if add is not None and (unary != "none" or add.dtype != x.dtype):
        return None
    assert isinstance(conv, nn.Conv2d)
    try:
        weight, bias = _packed(conv, x.dtype, tuple(x.shape))
        mk = _ops()
        if add is None:
            return mk._convolution_pointwise(
                x, weight, bias, *_geometry(conv), unary, list(scalars), ""
            )
        other = add.contiguous(memory_format=torch.channels_last)
        return mk._convolution_pointwise.binary(
            x, other, weight, bias, *_geometry(conv), "add", 1.0, None, [], None
        )
    except _FAILURES as exc:
        _unavailable(exc, x.dtype)
        return None


def conv_to_bf16(conv: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    """``conv(x)`` for an fp32 ``x``, computed to fp32's accuracy and rounded once to bf16 — in
    bf16 arithmetic; or ``None`` where it does not apply (as :func:`conv_pointwise`, and only for
    an fp32 input).

    For a layer that reads image intensities (RLFN's head, :func:`medsr.models.blocks.
    full_precision`) whose output the next layers read in bf16 anyway. The input and the weights
    are each split into a bf16 high part and the bf16 rounding of what it left
    (``x = xₕ + xₗ``, ``W = Wₕ + Wₗ``, each pair within 2⁻¹⁷ of the fp32 value), and one
    convolution over the channels ``[xₕ, xₗ, xₕ, xₗ]`` with the weights ``[Wₕ, Wₕ, Wₗ, Wₗ]`` sums
    all four products in its fp32 accumulator (bf16 × bf16 products are exact there), the fp32
    bias added: the fp32 convolution's value to a few fp32 ulps, then one rounding to bf16. On 2
    Xeon cores with AMX, RLFN's 1 → 24 channel head at 512²: 1.7 ms (0.4 of it the split input)
    against 4.2 for the fp32 convolution and the cast of its output; the same bf16 values but
    for 0.2 % of them, one bf16 ulp apart (the fp32 value lay next to a rounding boundary).
    """
    if x.dtype != torch.float32 or torch.bfloat16 in _FAILED_DTYPES or not _applies(conv, x):
        return None
    assert isinstance(conv, nn.Conv2d)
    try:
        shape = (x.shape[0], 4 * x.shape[1], *x.shape[2:])
        weight, bias = _packed(conv, torch.bfloat16, shape, split=True)
        xh = x.to(torch.bfloat16)
        xl = (x - xh.float()).to(torch.bfloat16)
        split = torch.cat((xh, xl, xh, xl), 1).contiguous(memory_format=torch.channels_last)
        return _ops()._convolution_pointwise(split, weight, bias, *_geometry(conv), "none", [], "")
    except _FAILURES as exc:
        _unavailable(exc, torch.bfloat16)
        return None


def folded(first: nn.Module, second: nn.Module, x: torch.Tensor) -> nn.Conv2d | None:
    """``second ∘ first`` as one convolution, for an input like ``x`` where the fused steps
    apply (:func:`conv_pointwise`), or ``None``: ``first`` a 1×1 convolution (stride 1, no
    padding), ``second`` any ungrouped convolution without padding (so that every tap of it reads
    a value of ``first``, bias included). Its weights are ``W₂·W₁`` and ``b₂ + Σ W₂·b₁``, made in
    fp32 once and again when either module's weights change.

    RLFN's attention reads its first 1×1 reduction (24 → 16 channels at full size) only through
    a strided 3×3 convolution and another 1×1 one: folded into both, the reduction is never
    written out (``fast-x2`` at 512² in bf16: ~3 % of the network). In fp32 the same values to
    rounding; in bf16 the reduction is not rounded to bf16 between the two any more.
    """
    if not (_applies(first, x) and isinstance(first, nn.Conv2d) and isinstance(second, nn.Conv2d)):
        return None
    if (
        first.kernel_size != (1, 1)
        or first.stride != (1, 1)
        or first.padding != (0, 0)
        or first.dilation != (1, 1)
        or second.groups != 1
        or second.padding != (0, 0)
        or second.in_channels != first.out_channels
    ):
        return None
    key = _state(first.weight, first.bias, second.weight, second.bias)
    cache: dict[Any, Any] = second.__dict__.setdefault("_medsr_folded", {})
    conv = cache.get(id(first), (None, None))
    if conv[0] != key:
        w1 = first.weight.detach().float()[:, :, 0, 0]  # (mid, in)
        w2 = second.weight.detach().float()  # (out, mid, kh, kw)
        # in fp32 whatever autocast is on (it would make the products bf16)
        with (
            torch.inference_mode(False),
            torch.no_grad(),
            torch.autocast(x.device.type, enabled=False),
        ):
            kh, kw = second.kernel_size
            (sh, sw), (dh, dw) = second.stride, second.dilation
            made = nn.Conv2d(
                first.in_channels, second.out_channels, (kh, kw),
                stride=(sh, sw), padding=0, dilation=(dh, dw),
                bias=first.bias is not None or second.bias is not None,
                device=w2.device,
            )  # fmt: skip
            made.weight.copy_(torch.einsum("omyx,mi->oiyx", w2, w1))
            if made.bias is not None:
                bias = torch.zeros(second.out_channels, device=w2.device)
                if second.bias is not None:
                    bias += second.bias.detach().float()
                if first.bias is not None:
                    bias += torch.einsum("omyx,m->o", w2, first.bias.detach().float())
                made.bias.copy_(bias)
        made = made.to(dtype=second.weight.dtype).eval()  # (conv_pointwise reorders the weights)
        made.requires_grad_(False)
        conv = cache[id(first)] = (key, made)
    return conv[1]


def _ops() -> Any:
    """oneDNN's operators (a function, so that tests can stand in for them)."""
    return torch.ops.mkldnn
