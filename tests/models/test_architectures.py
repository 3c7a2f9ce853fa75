"""Paper-faithful structure of the learned architectures at their default sizes.

Parameter counts (weights + biases) found here, against the papers:

==================  =====================  ==========  =========================
model               configuration          here        paper / reference
==================  =====================  ==========  =========================
SRCNN 9-1-5         1 channel              8,129       8,032 weights (+97 biases)
VDSR                1 channel              665,921     ≈ 665 k
residual5           1 channel              112,001     (ZSSR's 8-layer: ≈ 225 k)
SRDenseNet_All      1 channel, ×4          2,143,489   ≈ 2.0 M (re-implementations)
RDN                 RGB, ×2                22,123,395  ≈ 22 M
SRResNet            RGB, ×4                1,547,350   ≈ 1.5 M
EDSR-baseline       RGB, ×2                1,369,859   1.37 M
EDSR (large)        RGB, ×2                40,729,603  40.7 M
RLFN (NTIRE entry)  RGB, ×4, mid 48        317,218     0.317 M
RLFN (paper)        RGB, ×4, 52 ch, 6 blk  543,740     0.543 M
==================  =====================  ==========  =========================
"""

from __future__ import annotations

import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from medsr.models import create_model, get_model_class, list_models
from medsr.models.blocks import ESA, DenseBlock, ResidualBlock, ResidualDenseBlock, bicubic_upsample

LEARNED = list_models(learned=True)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def convs(model: nn.Module) -> list[nn.Conv2d]:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


def test_learned_zoo_is_complete():
    assert set(LEARNED) == {
        "srcnn",
        "vdsr",
        "residual5",
        "srdensenet",
        "rdn",
        "srresnet",
        "edsr",
        "rlfn",
    }


@pytest.mark.parametrize("name", LEARNED)
def test_interface_and_citation(name):
    cls = get_model_class(name)
    assert cls.learned is True and getattr(cls, "kind", "upscaler") == "upscaler"
    doc = cls.__doc__ or ""
    assert re.search(r"\b(CVPR|ICCV|ECCV|TPAMI)\b", doc) and re.search(r"\b20[012]\d\b", doc), doc
    model = create_model(name, scale=3, in_channels=3)
    assert model.scale == 3 and model.in_channels == 3 and model.out_channels == 3


@pytest.mark.parametrize("name", LEARNED)
def test_default_size_works_at_x3(name):
    model = create_model(name, scale=3, in_channels=1).eval()
    with torch.no_grad():
        y = model(torch.rand(1, 1, 9, 7))
    assert y.shape == (1, 1, 27, 21) and torch.isfinite(y).all()


@pytest.mark.parametrize("name", LEARNED)
def test_unsupported_scale_is_rejected(name):
    with pytest.raises(ValueError, match="scale"):
        create_model(name, scale=5)


def test_srcnn_is_9_1_5_with_64_32_filters():
    model = create_model("srcnn")
    layers = convs(model)
    assert [c.kernel_size for c in layers] == [(9, 9), (1, 1), (5, 5)]
    assert [c.out_channels for c in layers] == [64, 32, 1]
    assert sum(c.weight.numel() for c in layers) == 8032  # the paper's 8,032 parameters
    assert n_params(model) == 8129
    deeper = create_model("srcnn", num_blocks=2, kernel_sizes=(9, 5, 5))
    assert [c.kernel_size[0] for c in convs(deeper)] == [9, 5, 5, 5]


def test_srcnn_may_change_channels():
    y = create_model("srcnn", in_channels=3, out_channels=1)(torch.rand(1, 3, 8, 8))
    assert y.shape == (1, 1, 16, 16)


@pytest.mark.parametrize(("name", "layers"), [("vdsr", 20), ("residual5", 5)])
def test_bicubic_residual_nets(name, layers):
    model = create_model(name)
    cs = convs(model)
    assert len(cs) == layers and all(c.kernel_size == (3, 3) for c in cs)
    assert [c.out_channels for c in cs] == [64] * (layers - 1) + [1]
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    assert len(relus) == layers - 1
    # global residual learning: with a zero last layer the network is exactly bicubic
    nn.init.zeros_(cs[-1].weight)
    nn.init.zeros_(cs[-1].bias)
    x = torch.rand(1, 1, 10, 9)
    with torch.no_grad():
        torch.testing.assert_close(model(x), bicubic_upsample(x, 2))
    with pytest.raises(ValueError, match="out_channels"):
        create_model(name, in_channels=1, out_channels=3)


def test_vdsr_and_residual5_parameter_counts():
    assert n_params(create_model("vdsr")) == 665_921
    assert n_params(create_model("residual5")) == 112_001


def test_srdensenet_all_layout():
    model = create_model("srdensenet", scale=4)
    blocks = [m for m in model.modules() if isinstance(m, DenseBlock)]
    assert len(blocks) == 8
    assert all(len(b.layers) == 8 and b.out_channels == 128 for b in blocks)
    assert all(layer.out_channels == 16 for b in blocks for layer in b.layers)  # growth rate 16
    bottleneck = model.bottleneck[0]
    assert bottleneck.kernel_size == (1, 1) and (
        bottleneck.in_channels,
        bottleneck.out_channels,
    ) == (1152, 256)
    deconvs = [m for m in model.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [(d.kernel_size, d.stride, d.out_channels) for d in deconvs] == [
        ((3, 3), (2, 2), 256)
    ] * 2
    assert n_params(model) == 2_143_489
    assert (
        len(
            [
                m
                for m in create_model("srdensenet", scale=2).modules()
                if isinstance(m, nn.ConvTranspose2d)
            ]
        )
        == 1
    )
    ps = create_model("srdensenet", scale=3, upsampler="pixelshuffle", num_blocks=2)
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in ps.modules())
    assert ps(torch.rand(1, 1, 6, 5)).shape == (1, 1, 18, 15)


def test_rdn_layout_and_size():
    model = create_model("rdn", in_channels=3)
    rdbs = [m for m in model.modules() if isinstance(m, ResidualDenseBlock)]
    assert len(rdbs) == 16  # D
    for rdb in rdbs:
        assert len(rdb.layers) == 8  # C
        assert [c.in_channels for c in rdb.layers] == [64 + 64 * c for c in range(8)]  # G0 + c·G
        assert (rdb.fusion.in_channels, rdb.fusion.out_channels, rdb.fusion.kernel_size) == (
            576,
            64,
            (1, 1),
        )
    assert (model.gff[0].in_channels, model.gff[0].kernel_size) == (16 * 64, (1, 1))
    assert n_params(model) == 22_123_395  # ≈ 22 M in the paper
    x4 = create_model("rdn", scale=4, num_blocks=1, num_layers=2)
    assert [m.upscale_factor for m in x4.modules() if isinstance(m, nn.PixelShuffle)] == [2, 2]


def test_srresnet_layout_and_size():
    model = create_model("srresnet", in_channels=3, scale=4)
    blocks = [m for m in model.modules() if isinstance(m, ResidualBlock)]
    assert len(blocks) == 16
    assert all(sum(isinstance(m, nn.BatchNorm2d) for m in b.modules()) == 2 for b in blocks)
    assert all(any(isinstance(m, nn.PReLU) for m in b.modules()) for b in blocks)
    cs = convs(model)
    assert cs[0].kernel_size == (9, 9) and cs[-1].kernel_size == (9, 9)
    assert [m.upscale_factor for m in model.modules() if isinstance(m, nn.PixelShuffle)] == [2, 2]
    assert n_params(model) == 1_547_350  # ≈ 1.5 M


def test_edsr_baseline_and_large():
    base = create_model("edsr", in_channels=3)
    assert n_params(base) == 1_369_859  # EDSR-baseline ×2: 1.37 M
    assert not any(isinstance(m, nn.BatchNorm2d) for m in base.modules())
    blocks = [m for m in base.modules() if isinstance(m, ResidualBlock)]
    assert len(blocks) == 16 and all(b.res_scale == 1.0 for b in blocks)
    large = create_model("edsr", in_channels=3, num_features=256, num_blocks=32)
    assert large.res_scale == 0.1
    assert abs(n_params(large) - 40.7e6) < 0.05e6  # EDSR ×2: 40.7 M
    assert create_model("edsr", num_features=256, num_blocks=1, res_scale=1.0).res_scale == 1.0


def test_rlfn_layout_and_size():
    model = create_model("rlfn", in_channels=3, scale=4)
    assert len(model.blocks) == 4 and all(isinstance(b.esa, ESA) for b in model.blocks)
    assert convs(model)[0].out_channels == 46
    assert n_params(model) == 303_810
    assert (
        n_params(create_model("rlfn", in_channels=3, scale=4, mid_features=48)) == 317_218
    )  # NTIRE: 0.317 M
    paper = create_model("rlfn", in_channels=3, scale=4, num_features=52, num_blocks=6)
    assert n_params(paper) == 543_740  # RLFN paper: 0.543 M


@pytest.mark.parametrize("size", [(1, 1), (2, 5), (4, 4), (24, 17)])
def test_rlfn_esa_handles_any_input_size(size):
    model = create_model("rlfn").eval()
    with torch.no_grad():
        y = model(torch.rand(1, 1, *size))
    assert y.shape == (1, 1, 2 * size[0], 2 * size[1])


@settings(max_examples=200, deadline=None)
@given(
    ch=st.integers(1, 30), cw=st.integers(1, 30), dh=st.integers(-12, 20), dw=st.integers(-12, 20),
    seed=st.integers(0, 2**16), dtype=st.sampled_from([torch.float32, torch.bfloat16]),
)  # fmt: skip
def test_fixed_esa_spread_is_bilinear_by_six_then_edge_extended(ch, cw, dh, dw, seed, dtype):
    """The fixed spread: the coarse map upsampled ×6 (bilinear, half-pixel centres) on the
    input's grid, cropped or extended by repeating its last row/column, at any size — in the
    map's own dtype under CPU autocast too (whose padding would widen bf16 to fp32)."""
    st6 = ESA.STRIDE
    coarse = torch.randn(1, 3, ch, cw, generator=torch.Generator().manual_seed(seed)).to(dtype)
    size = (max(1, ch * st6 + dh), max(1, cw * st6 + dw))
    up = nn.functional.interpolate(coarse, scale_factor=st6, mode="bilinear", align_corners=False)
    ph, pw = max(0, size[0] - up.shape[-2]), max(0, size[1] - up.shape[-1])
    want = nn.functional.pad(up, (0, pw, 0, ph), mode="replicate")[..., : size[0], : size[1]]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = ESA(8, 3, "fixed").spread(coarse, size)
    assert got.dtype == dtype and got.shape == want.shape
    assert torch.equal(got, want)


@pytest.mark.parametrize(
    "kwargs",
    [
        {
            "num_features": 46,
            "num_blocks": 4,
            "global_residual": True,
            "esa_spread": "fixed",
            "scale": 2,
        },
        {
            "num_features": 46,
            "num_blocks": 2,
            "global_residual": True,
            "esa_spread": "fixed",
            "scale": 4,
        },
        {"num_features": 30, "mid_features": 21, "esa_channels": 13, "num_blocks": 2, "scale": 2},
    ],
)
def test_rlfn_widened_is_the_same_function(kwargs):
    """Tensor-core widths for the GPU: zero channels added in and out change nothing."""
    torch.manual_seed(0)
    model = create_model("rlfn", **kwargs).eval()
    for p in model.parameters():  # trained-looking weights (a global residual starts at zero)
        p.data.normal_(0, 0.1)
    wide = model.widened(8)
    assert wide.head.out_channels % 8 == 0 and wide.blocks[0].body[0].out_channels % 8 == 0
    assert wide.blocks[0].esa.conv1.out_channels % 8 == 0
    assert (wide.tile_align, wide.reach, wide.residual_base) == (
        model.tile_align,
        model.reach,
        model.residual_base,
    )
    x = torch.rand(2, 1, 37, 50) * 4 - 1
    with torch.no_grad():  # equal up to the order of the convolutions' sums
        torch.testing.assert_close(wide(x), model(x), rtol=0, atol=1e-5)
        torch.testing.assert_close(wide.detail(x), model.detail(x), rtol=0, atol=1e-5)
    assert wide.widened(8) is wide


def test_list_models_excludes_discriminators():
    assert "patchgan" not in list_models() and "srgan-discriminator" not in list_models()
    assert "patchgan" not in list_models(learned=True)
    assert list_models(kind="discriminator") == ["patchgan", "srgan-discriminator"]
    everything = list_models(kind=None)
    # through-plane 1-D upscalers (selfsup) and slice interpolators
    others = set(list_models(kind="interpolator-1d")) | set(list_models(kind="slice-interpolator"))
    assert set(everything) == set(list_models()) | {"patchgan", "srgan-discriminator"} | others
    for name in everything:
        assert create_model(name) is not None


def test_srgan_discriminator():
    d = create_model("srgan-discriminator", in_channels=3)
    assert d.kind == "discriminator"
    cs = convs(d)[:8]
    assert [c.out_channels for c in cs] == [64, 64, 128, 128, 256, 256, 512, 512]
    assert [c.stride[0] for c in cs] == [1, 2] * 4
    assert sum(isinstance(m, nn.BatchNorm2d) for m in d.modules()) == 7
    for size in [(96, 96), (40, 56)]:
        x = torch.rand(2, 3, *size)
        assert d(x).shape == (2, 1)
        feats = d.features(x)
        assert [f.shape[1] for f in feats] == [64, 64, 128, 128, 256, 256, 512, 512]
        assert feats[-1].shape[-2:] == tuple((s + 15) // 16 for s in size)
    small = create_model("srgan-discriminator", num_features=8, num_blocks=2)
    x = torch.rand(2, 1, 16, 16, requires_grad=True)
    small(x).sum().backward()
    assert all(p.grad is not None for p in small.parameters())


def test_patchgan_shapes_and_70px_receptive_field():
    d = create_model("patchgan", in_channels=3)
    assert d.kind == "discriminator"
    assert d(torch.rand(1, 3, 256, 256)).shape == (1, 1, 30, 30)  # pix2pix: 30×30 patches
    assert [f.shape[1] for f in d.features(torch.rand(1, 3, 64, 64))] == [64, 128, 256, 512]
    # each logit sees a 70×70 input patch
    d.eval()
    x = torch.rand(1, 3, 128, 128, requires_grad=True)
    out = d(x)
    out[0, 0, out.shape[-2] // 2, out.shape[-1] // 2].backward()
    seen = x.grad[0].abs().sum(0) > 0
    rows, cols = seen.any(1).nonzero(), seen.any(0).nonzero()
    assert int(rows.max() - rows.min() + 1) == 70 and int(cols.max() - cols.min() + 1) == 70
    deeper = create_model("patchgan", num_blocks=4, norm="instance", num_features=8)
    assert deeper(torch.rand(2, 1, 64, 64)).shape == (2, 1, 2, 2)


@pytest.mark.parametrize("name", LEARNED)
def test_intermediate_features_for_distillation(name):
    """``feature_layers()`` (or ``.blocks``) gives the layers whose outputs are the features."""
    model = create_model(name, num_features=8, num_blocks=3)
    layers = model.feature_layers() if hasattr(model, "feature_layers") else list(model.blocks)
    assert len(layers) >= 2
    seen: list[torch.Tensor] = []
    hooks = [m.register_forward_hook(lambda _m, _a, out: seen.append(out)) for m in layers]
    model(torch.rand(1, 1, 8, 8))
    for h in hooks:
        h.remove()
    assert len(seen) == len(layers) and all(t.ndim == 4 for t in seen)
