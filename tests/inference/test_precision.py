"""Precision: bf16 for the learned residual only, and what ``--precision auto`` picks (no timing)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import medsr
from medsr.errors import InvalidParameterError
from medsr.image import MedImage
from medsr.inference import precision as prec
from medsr.inference.planes import PlaneUpscaler
from medsr.models.resolver import resolve_model, shipped_weights

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CPU = torch.device("cpu")


@pytest.fixture
def native_cpu(monkeypatch):
    """A CPU that reports AMX bf16."""
    monkeypatch.setattr(prec, "_cpu_flags", lambda: {"avx512f", "amx_bf16", "amx_tile"})


@pytest.fixture
def plain_cpu(monkeypatch):
    monkeypatch.setattr(prec, "_cpu_flags", lambda: {"avx2", "fma"})


def _checksum(name: str) -> str:
    return resolve_model(name).checksum


def test_choices_and_errors():
    assert prec.check_precision("auto") == "auto"
    for p in ("fp32", "bf16", "fp16"):
        assert prec.check_precision(p, allow_auto=False) == p
    with pytest.raises(InvalidParameterError, match="precision must be one of"):
        prec.check_precision("int8")
    with pytest.raises(InvalidParameterError, match="precision must be one of fp32, bf16, fp16;"):
        prec.check_precision("auto", allow_auto=False)


def test_explicit_requests_pass_through(plain_cpu):
    for p in ("fp32", "bf16", "fp16"):
        assert prec.resolve_precision(p, CPU, "sha256:x", True) == (p, "requested")


def test_native_bf16_from_cpu_flags(native_cpu):
    ok, why = prec.native_bf16(CPU)
    assert ok and "amx_bf16" in why


def test_auto_is_fp32_without_native_bf16(plain_cpu, monkeypatch):
    monkeypatch.setitem(
        prec.BF16_MEASURED, "sha256:m", {"model": "m", "hu_max": 0.1, "hu_rms": 0.01}
    )
    got, why = prec.resolve_precision("auto", CPU, "sha256:m", True)
    assert got == "fp32" and "without AVX-512 BF16 or AMX" in why


def test_auto_takes_bf16_only_for_models_measured_within_tolerance(native_cpu, monkeypatch):
    """In tissue at most BF16_TOLERANCE_HU, at steep edges BF16_TOLERANCE_EDGE of the step, and
    BF16_TOLERANCE_HU_RMS overall; an entry without the tissue/edge split is held to the HU
    tolerance at every pixel."""
    tol, edge, tol_rms = (
        prec.BF16_TOLERANCE_HU,
        prec.BF16_TOLERANCE_EDGE,
        prec.BF16_TOLERANCE_HU_RMS,
    )
    for checksum, entry in {
        "ok": {"hu_tissue_max": tol, "edge_max": edge, "hu_max": 3 * tol, "hu_rms": tol_rms},
        "tissue": {"hu_tissue_max": 2 * tol, "edge_max": 0.0, "hu_max": 2 * tol, "hu_rms": 0.0},
        "edge": {"hu_tissue_max": 0.0, "edge_max": 2 * edge, "hu_max": 3 * tol, "hu_rms": 0.0},
        "rms": {"hu_tissue_max": 0.0, "edge_max": 0.0, "hu_max": 0.0, "hu_rms": 2 * tol_rms},
        "old ok": {"hu_max": tol, "hu_rms": tol_rms},
        "old far": {"hu_max": 2 * tol, "hu_rms": 0.0},
    }.items():
        monkeypatch.setitem(prec.BF16_MEASURED, f"sha256:{checksum}", {"model": checksum, **entry})
    assert prec.resolve_precision("auto", CPU, "sha256:ok", True)[0] == "bf16"
    assert prec.resolve_precision("auto", CPU, "sha256:old ok", True)[0] == "bf16"
    tissue = prec.resolve_precision("auto", CPU, "sha256:tissue", True)
    assert tissue[0] == "fp32" and "in tissue" in tissue[1] and "tolerance 5 HU" in tissue[1]
    edge_ = prec.resolve_precision("auto", CPU, "sha256:edge", True)
    assert edge_[0] == "fp32" and "% of the step (tolerance 2 %)" in edge_[1]
    assert prec.resolve_precision("auto", CPU, "sha256:rms", True)[0] == "fp32"
    assert prec.resolve_precision("auto", CPU, "sha256:old far", True)[0] == "fp32"
    unknown = prec.resolve_precision("auto", CPU, "sha256:retrained", True)
    assert unknown == ("fp32", "auto: bf16 not measured for this model (benchmarks/precision.py)")
    assert prec.resolve_precision("auto", CPU, "sha256:ok", False)[0] == "fp32"  # classical


def test_ct_change_splits_tissue_from_steep_edges():
    """A 1,000 HU step: a pixel on it may change by 2 % of the step, tissue pixels by 5 HU."""
    image = np.zeros((1, 8, 8))
    image[..., 4:] = 1000.0
    ref = np.repeat(np.repeat(image, 2, axis=-2), 2, axis=-1)
    low = ref.copy()
    low[0, 0, 0] += 3.0  # tissue (its 3×3 input neighbourhood is flat)
    low[0, 0, 7] += 15.0  # on the step: 1.5 % of it
    c = prec.ct_change(ref, low, image, 2)
    assert (
        c["hu_tissue_max"] == 3.0 and c["edge_max"] == pytest.approx(0.015) and c["hu_max"] == 15.0
    )
    assert c["hu_rms"] == pytest.approx(np.sqrt((9 + 225) / ref.size))
    with pytest.raises(ValueError, match="do not match"):
        prec.ct_change(ref, low, image, 4)


def test_auto_on_cuda_asks_the_gpu(monkeypatch):
    monkeypatch.setattr(
        torch.cuda, "is_bf16_supported", lambda including_emulation=True: not including_emulation
    )
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Test GPU")
    monkeypatch.setattr(
        torch.cuda, "get_device_capability", lambda device=None: (6, 1)
    )  # no fp16 cores
    monkeypatch.setitem(
        prec.BF16_MEASURED, "sha256:ok", {"model": "ok", "hu_max": 0.0, "hu_rms": 0.0}
    )
    got, why = prec.resolve_precision("auto", torch.device("cuda"), "sha256:ok", True)
    assert got == "bf16" and "Test GPU: native bf16" in why


@pytest.fixture
def fake_gpu(monkeypatch):
    """A CUDA device named "Test GPU" with native bf16 and compute capability 9.0."""
    monkeypatch.setattr(
        torch.cuda, "is_bf16_supported", lambda including_emulation=True: not including_emulation
    )
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Test GPU")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    return torch.device("cuda")


def test_auto_on_cuda_takes_fp16_first(fake_gpu, monkeypatch):
    """On a GPU with fp16 tensor cores: fp16 when it is within the tolerance (more precise than
    bf16 at the same speed), else bf16 when that is, else fp32."""
    tol = prec.BF16_TOLERANCE_HU
    for checksum, bf16, fp16 in (
        ("sha256:a", 3 * tol, 0.1 * tol),  # bf16 too far, fp16 within: fp16
        ("sha256:b", 3 * tol, 2 * tol),  # both too far: fp32
        ("sha256:c", 0.5 * tol, 0.1 * tol),  # both within: fp16
        ("sha256:d", 0.5 * tol, 2 * tol),  # only bf16 within: bf16
    ):
        monkeypatch.setitem(
            prec.BF16_MEASURED, checksum, {"model": checksum, "hu_max": bf16, "hu_rms": 0.0}
        )
        monkeypatch.setitem(
            prec.FP16_MEASURED, checksum, {"model": checksum, "hu_max": fp16, "hu_rms": 0.0}
        )
    got, why = prec.resolve_precision("auto", fake_gpu, "sha256:a", True)
    assert got == "fp16" and "Test GPU (compute capability 9.0): fp16 tensor cores" in why
    got, why = prec.resolve_precision("auto", fake_gpu, "sha256:b", True)
    assert got == "fp32" and "bf16 changes this model's CT output by up to" in why
    assert prec.resolve_precision("auto", fake_gpu, "sha256:c", True)[0] == "fp16"
    assert prec.resolve_precision("auto", fake_gpu, "sha256:d", True)[0] == "bf16"
    assert prec.resolve_precision("auto", fake_gpu, "sha256:unmeasured", True)[0] == "fp32"
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (6, 1))
    assert (
        prec.resolve_precision("auto", fake_gpu, "sha256:a", True)[0] == "fp32"
    )  # no tensor cores
    assert prec.resolve_precision("auto", fake_gpu, "sha256:c", True)[0] == "bf16"
    assert prec.native_fp16(CPU)[0] is False
    monkeypatch.setattr(prec, "_cpu_flags", lambda: {"avx512_bf16"})  # never fp16 on a CPU
    assert prec.resolve_precision("auto", CPU, "sha256:a", True)[0] == "fp32"


def test_fp16_overflow_runs_the_network_again_in_fp32():
    """fp16 tops out at 65,504: a batch whose fp16 residual is not finite is computed in fp32,
    and the derivation says so. (fp16 is emulated here for the test: the upscaler runs it on
    CUDA only.)"""
    img = MedImage(
        np.linspace(-1000, 1000, 24 * 24, dtype=np.float32).reshape(1, 24, 24),
        modality="CT",
        units="HU",
    )
    ref = PlaneUpscaler("fast-x2", 2).upscale(img)
    up = PlaneUpscaler("fast-x2", 2, precision="bf16")
    up.precision, up.autocast_dtype = "fp16", torch.float16
    call = up._net_call

    def overflowing(*args):
        out = call(*args)
        if torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.float16:
            return out * torch.inf
        return out

    up._net_call = overflowing
    sr = up.upscale(img)
    assert up.fp16_fallbacks == 1
    # fp32's numbers, to its rounding: the upscaler made for bf16 lays the network out for it
    # (bit-identical to the plain fp32 upscaler on the Xeon with AMX; 2 ulp apart, 1.2e-4 HU, on an
    # AMD EPYC without AMX), where any pass in fp16 or bf16 moves this image by more than 0.1 HU
    np.testing.assert_allclose(sr.array, ref.array, rtol=0, atol=1e-3)
    reduced = PlaneUpscaler("fast-x2", 2, precision="bf16").upscale(img)
    assert np.abs(reduced.array - ref.array).max() > 0.1
    assert "fp16 overflowed on 1 batch(es)" in sr.meta["derivation"]["precision_fallback"]


@pytest.mark.parametrize("model", ["fast-x2", "default-x2"])
def test_fp16_change_on_ct_is_within_the_tolerance(corpus, model):
    """What FP16_MEASURED records, on the corpus CT_small: fp16 (emulated on the CPU, as
    benchmarks/precision.py measures it) keeps a shipped model within the tolerance."""
    img = medsr.load_image(corpus("CT_small.dcm"))
    ref = PlaneUpscaler(model, 2).upscale(img)
    up = PlaneUpscaler(model, 2, precision="bf16")
    up.precision, up.autocast_dtype = "fp16", torch.float16
    d = np.abs(up.upscale(img).array.astype(np.float64) - ref.array)
    assert 0 < d.max() <= prec.BF16_TOLERANCE_HU / 4
    assert np.sqrt(np.mean(d**2)) <= prec.BF16_TOLERANCE_HU_RMS / 4


def test_measured_table_describes_shipped_weights():
    """Every entry names a shipped model by its current weights' checksum (retrained weights
    must be measured again: benchmarks/precision.py prints the entries)."""
    shipped = shipped_weights()
    for checksum, entry in [*prec.BF16_MEASURED.items(), *prec.FP16_MEASURED.items()]:
        assert entry["model"] in shipped, entry
        assert _checksum(entry["model"]) == checksum, (
            f"{entry['model']}: re-run benchmarks/precision.py"
        )
        assert {"hu_tissue_max", "edge_max", "hu_max", "hu_rms"} <= set(entry)


def test_auto_runs_every_shipped_default_in_bf16_where_native(monkeypatch):
    """What the measured tables decide where bf16 is native: every shipped default within the
    tolerance — default-x2 with its first block in fp32 (plain bf16 changes its tissue values by
    10.6 HU), default-x4 (since its kernel stages, session 18) with three of its four blocks in
    fp32 (plain bf16 changes its tissue by 19.9 HU, 7.8 with one block in fp32, 6.3 with two),
    the fast models and the MR k-space defaults plain."""
    monkeypatch.setattr(prec, "_cpu_flags", lambda: {"avx512_bf16"})
    models = [m for m in shipped_weights() if m.startswith(("fast-", "default-"))]
    got = {m: prec.resolve_precision("auto", CPU, _checksum(m), True) for m in models}
    assert {m: g[0] for m, g in got.items()} == dict.fromkeys(models, "bf16")
    blocks = {m: prec.bf16_fp32_blocks(_checksum(m)) for m in models}
    assert blocks == {m: {"default-x2": 1, "default-x4": 3}.get(m, 0) for m in models}
    assert "(its first block in fp32)" in got["default-x2"][1]
    assert "(its first 3 blocks in fp32)" in got["default-x4"][1]


def test_auto_in_the_upscaler_and_its_record(monkeypatch):
    img = MedImage(
        np.linspace(-1000, 1000, 2 * 24 * 24, dtype=np.float32).reshape(2, 24, 24),
        modality="CT",
        units="HU",
    )
    monkeypatch.setattr(prec, "_cpu_flags", lambda: {"amx_bf16"})
    monkeypatch.setitem(
        prec.BF16_MEASURED, _checksum("fast-x2"), {"model": "fast-x2", "hu_max": 0.0, "hu_rms": 0.0}
    )
    up = PlaneUpscaler("fast-x2", 2, precision="auto")
    assert (up.precision, up.autocast_dtype) == ("bf16", torch.bfloat16)
    sr = up.upscale(img)
    assert sr.meta["derivation"]["precision"] == "bf16"
    assert "amx_bf16" in sr.meta["derivation"]["precision_auto"]
    shared = PlaneUpscaler(up, 2)  # a shared network keeps its arithmetic and the reason
    assert (shared.precision, shared.precision_note) == (up.precision, up.precision_note)
    monkeypatch.setattr(prec, "_cpu_flags", lambda: set())
    plain = medsr.upscale(img, 2, "fast-x2", precision="auto")
    assert plain.meta["derivation"]["precision"] == "fp32"
    assert (
        medsr.upscale(img, 2, "bicubic", precision="auto").meta["derivation"]["precision"] == "fp32"
    )


class _Spy(torch.nn.Module):
    """Records the dtype each wrapped layer sees."""

    def __init__(self, layer: torch.nn.Module, seen: list[torch.dtype]):
        super().__init__()
        self.layer, self.seen = layer, seen

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.dtype)
        return self.layer(x)


def test_bf16_runs_the_residual_only():
    """bf16: the head reads fp32 intensities, the body runs in bf16, the base and the add stay
    fp32 — and the prediction is exactly base + detail (clamped, projected)."""
    up = PlaneUpscaler("fast-x2", 2, precision="bf16")
    assert up.residual_split
    seen_head: list[torch.dtype] = []
    seen_tail: list[torch.dtype] = []
    net = up.net
    head, tail = net.head, net.body_tail
    net.head, net.body_tail = _Spy(head, seen_head), _Spy(tail, seen_tail)
    try:
        x = torch.rand(1, 1, 32, 32)  # the training patch (LR): not padded
        with torch.inference_mode():
            pred, base = up.forward_tensor(x, need_base=True)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                detail = net.detail(x).float()
    finally:
        net.head, net.body_tail = head, tail
    assert seen_head[0] == torch.float32 and seen_tail[0] == torch.bfloat16
    assert pred.dtype == base.dtype == torch.float32
    from medsr.models.classical import Bicubic

    assert torch.equal(base, Bicubic(2)(x))  # the fp32 base: PyTorch's bicubic, to rounding
    bicubic = torch.nn.functional.interpolate(
        x, scale_factor=2, mode="bicubic", align_corners=False
    )
    torch.testing.assert_close(base, bicubic, atol=1e-6, rtol=0)
    from medsr.models.lowband import project_low_band
    from medsr.models.range_guard import clamp_to_local_range, low_band_drift

    cut, raw = up.low_band_cutoff, base + detail  # the fp32 add of the bf16 residual
    drift = low_band_drift(detail, None, 2)  # the detail's own drift, summed in fp32
    guarded = clamp_to_local_range(raw, x, 2, up.range_margin, shift=drift)
    assert torch.equal(pred, project_low_band(guarded, base, 2, cut))


@pytest.mark.parametrize("model", ["fast-x2", "default-x2"])
def test_bf16_change_on_ct_is_within_the_documented_tolerance(corpus, model):
    """The residual-only bf16 keeps a shipped model's CT output within the tolerance that
    ``auto`` uses (the full measurement: benchmarks/precision.py)."""
    img = medsr.load_image(corpus("CT_small.dcm"))
    ref = medsr.upscale(img, scale=2, model=model)
    low = medsr.upscale(img, scale=2, model=model, precision="bf16")
    assert low.meta["derivation"]["precision"] == "bf16"
    c = prec.ct_change(ref.array, low.array, img.array, 2)
    assert 0 < c["hu_max"] and c["hu_tissue_max"] <= prec.BF16_TOLERANCE_HU
    assert c["edge_max"] <= prec.BF16_TOLERANCE_EDGE and c["hu_rms"] <= prec.BF16_TOLERANCE_HU_RMS


def test_default_x4_keeps_three_blocks_in_fp32(corpus, monkeypatch):
    """Where session 18's default-x4 moves CT tissue most in bf16 (the pancreas CT's corner,
    128²): plain bf16 and its first block alone in fp32 are outside the tolerance there (~22 and
    ~6 HU in tissue), its recipe (three of its four blocks in fp32, what ``auto`` runs) inside."""
    img = medsr.load_image(corpus("explicit_VR-UN.dcm"))
    img = img.replace(array=np.ascontiguousarray(img.array[:, :128, 384:]))
    ref = medsr.upscale(img, scale=4, model="default-x4")
    key = _checksum("default-x4")
    assert prec.bf16_fp32_blocks(key) == 3

    def change(blocks: int) -> dict[str, float]:
        monkeypatch.setitem(
            prec.BF16_MEASURED, key, {**prec.BF16_MEASURED[key], "fp32_blocks": blocks}
        )
        low = medsr.upscale(img, scale=4, model="default-x4", precision="bf16")
        return prec.ct_change(ref.array, low.array, img.array, 4)

    for blocks in (0, 1):
        assert change(blocks)["hu_tissue_max"] > prec.BF16_TOLERANCE_HU
    c = change(3)
    assert (
        c["hu_tissue_max"] <= prec.BF16_TOLERANCE_HU and c["edge_max"] <= prec.BF16_TOLERANCE_EDGE
    )
    assert c["hu_rms"] <= prec.BF16_TOLERANCE_HU_RMS


def test_precision_option_of_the_pipeline(tmp_path):
    from medsr.pipeline import check_options

    check_options(precision="auto")
    check_options(precision="auto", method="zero-shot", budget_s=1)  # auto is fp32 there
    with pytest.raises(InvalidParameterError, match="precision applies to trained models"):
        check_options(precision="bf16", method="zero-shot", budget_s=1)
    with pytest.raises(InvalidParameterError, match="precision must be one of"):
        check_options(precision="fast")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_cuda_reduced_precision_keeps_hu(corpus, precision):
    """On the GPU too the residual-only bf16/fp16 stays within the tolerance of CPU fp32."""
    img = medsr.load_image(corpus("CT_small.dcm"))
    ref = medsr.upscale(img, scale=2, model="fast-x2", device="cpu")
    low = medsr.upscale(img, scale=2, model="fast-x2", device="cuda", precision=precision)
    assert low.meta["derivation"]["precision"] == precision
    c = prec.ct_change(ref.array, low.array, img.array, 2)
    assert (
        c["hu_tissue_max"] <= prec.BF16_TOLERANCE_HU and c["edge_max"] <= prec.BF16_TOLERANCE_EDGE
    )
    assert c["hu_rms"] <= prec.BF16_TOLERANCE_HU_RMS


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_auto_and_kept_base():
    """auto on a GPU: fp16, else bf16, for a model measured within the tolerance (fast-x2:
    both are, fp16 is taken); the one pass keeps its base on the GPU too."""
    up = PlaneUpscaler("fast-x2", 2, device="cuda", precision="auto")
    fp16 = prec._within(prec.FP16_MEASURED.get(up.loaded.checksum), "fp16")[0]
    bf16 = prec._within(prec.BF16_MEASURED.get(up.loaded.checksum), "bf16")[0]
    native = torch.cuda.is_bf16_supported(including_emulation=False)
    tensor_cores = torch.cuda.get_device_capability() >= (7, 0)
    expected = "fp16" if fp16 and tensor_cores else "bf16" if bf16 and native else "fp32"
    assert up.precision == expected
    img = MedImage(
        np.linspace(-1000, 1000, 2 * 32 * 32, dtype=np.float32).reshape(2, 32, 32),
        modality="CT",
        units="HU",
    )
    job = up.run_job(up.prepare(img, keep_base=True))
    cpu = PlaneUpscaler("bicubic", 2, device="cpu", clip=False).upscale(img).array
    np.testing.assert_allclose(up.base_array(job, clip=False), cpu, atol=1e-3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_widened_default_is_the_same_function(corpus, monkeypatch):
    """On a GPU the upscaler runs default-x2's 46 channels widened to 48 (zero channels, tensor-core
    widths) in channels-last: the same output as the network as trained, to fp32 rounding."""
    from medsr.inference import planes

    img = medsr.load_image(corpus("CT_small.dcm"))
    wide = PlaneUpscaler("default-x2", 2, device="cuda", precision="fp32")
    assert wide.net is not wide.loaded.net and wide.net.head.out_channels == 48
    monkeypatch.setattr(planes, "CUDA_CHANNEL_MULTIPLE", None)
    plain = PlaneUpscaler("default-x2", 2, device="cuda", precision="fp32")
    assert plain.net.head.out_channels == 46
    a, b = wide.upscale(img).array.astype(np.float64), plain.upscale(img).array
    assert (
        np.abs(a - b).max() <= 1.0
    )  # HU: TF32 convolutions (torch's CUDA default) differ by ~1 HU


class _OutSpy(torch.nn.Module):
    """Records the dtype each wrapped layer computes in (its output's)."""

    def __init__(self, layer: torch.nn.Module, seen: list[torch.dtype]):
        super().__init__()
        self.layer, self.seen = layer, seen

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.layer(x)
        self.seen.append(y.dtype)
        return y


def test_rlfn_keeps_its_first_blocks_in_fp32_when_asked():
    """``detail(fp32_blocks=n)``: under bf16 autocast the first n blocks compute in fp32, the rest
    in bf16; without autocast the argument changes nothing."""
    from medsr.models.efficient import RLFN

    torch.manual_seed(0)
    net = RLFN(
        num_features=8, num_blocks=3, scale=2, global_residual=True, esa_spread="fixed"
    ).eval()
    torch.nn.init.normal_(net.upsample[0].weight, std=0.1)  # zero at init: a residual that is there
    seen: list[torch.dtype] = []
    for b in net.blocks:
        b.body[0] = _OutSpy(b.body[0], seen)
    x = torch.rand(1, 1, 24, 24)
    with torch.inference_mode():
        plain = net.detail(x)
        torch.testing.assert_close(net.detail(x, fp32_blocks=2), plain, rtol=0, atol=0)
        seen.clear()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = net.detail(x, fp32_blocks=1)
    assert seen == [torch.float32, torch.bfloat16, torch.bfloat16]
    assert low.shape == plain.shape


def test_bf16_runs_the_measured_recipe(monkeypatch):
    """``--precision bf16`` runs the recipe measured for the weights (BF16_MEASURED's
    ``fp32_blocks``): default-x2 keeps its first block in fp32, fast-x2 none; fp32 and fp16 ignore
    it; a shared upscaler of another precision gets its own."""
    for model in ("default-x2", "fast-x2"):
        want = prec.bf16_fp32_blocks(_checksum(model))
        up = PlaneUpscaler(model, 2, precision="bf16")
        assert up.fp32_blocks == want
        assert getattr(up._net_call, "keywords", {}).get("fp32_blocks", 0) == want
        assert PlaneUpscaler(model, 2, precision="fp32").fp32_blocks == 0
        assert PlaneUpscaler(up, 2, precision="fp32").fp32_blocks == 0
        assert PlaneUpscaler(PlaneUpscaler(model, 2), 2, precision="bf16").fp32_blocks == want
    assert prec.bf16_fp32_blocks(_checksum("default-x2")) == 1
    assert prec.bf16_fp32_blocks("sha256:unmeasured") == 0


def test_precision_and_device_names_in_any_case():
    """`--precision FP32 --device CPU` were refused while `--modality ct` was accepted: the names
    are read in any case (and around spaces), as the other options' are."""
    from medsr.inference.device import resolve_device

    assert prec.check_precision(" FP32 ") == "fp32" and prec.check_precision("Auto") == "auto"
    assert resolve_device("CPU").type == "cpu" and resolve_device(" Auto ").type in ("cpu", "cuda")
    with pytest.raises(InvalidParameterError, match="precision must be one of"):
        prec.check_precision("fp64")


@pytest.mark.parametrize("asked", ["bf16", "auto"])
def test_a_classical_interpolator_records_the_fp32_it_runs(asked):
    """``--model lanczos --precision bf16`` ran lanczos in fp32 (nothing learned to run in bf16:
    the output is bit-identical) and recorded "precision bf16" in the derivation; it records fp32
    and why."""
    img = MedImage(np.linspace(0, 1000, 24 * 24, dtype=np.float32).reshape(1, 24, 24))
    ref = PlaneUpscaler("lanczos", 2).upscale(img)
    out = PlaneUpscaler("lanczos", 2, precision=asked).upscale(img)
    np.testing.assert_array_equal(out.array, ref.array)
    deriv = out.meta["derivation"]
    assert deriv["precision"] == "fp32"
    assert deriv["precision_auto"] == f"{asked}: a classical interpolator has no learned part"
