"""Precision table: what bf16 and fp16 change, per shipped in-plane model, and their speed.

For every shipped in-plane model, against fp32:

* **HU change** on the corpus CT (bad_sequence.dcm, explicit_VR-UN.dcm, J2K_pixelrep_mismatch.dcm
  at 512², CT_small.dcm at 128²) upscaled by the model's factor with ``medsr.upscale``, as
  ``--precision auto`` judges it (:func:`medsr.inference.precision.ct_change`): the largest
  change in tissue (HU), at steep edges (a fraction of the step) and at any pixel, and the RMS;
* **PSNR change** on validation pairs (the same CT slices and the corpus MR — the Siemens
  abdomen at 484², MR_small, emri_small's 10 frames — degraded ×scale with bicubic, then
  upscaled back), mean over the images, dB;
* **speed** of what ``medsr upscale`` runs per 512² slice (base + network + low-band
  projection; ``PlaneUpscaler.forward_tensor``), median of ``--repeats``.

Variants: ``bf16`` = the learned residual in bf16 — its input layer reading the intensities in
fp32 — and base, add, normalisation and projection in fp32; ``bf16 first block fp32`` = the same
with the network's first block in fp32 too (RLFN), and when neither is within the tolerance
``bf16 first N blocks fp32`` for N = 2, 3, … until one is. ``--precision bf16`` runs the first
of them within the tolerance (the recipe recorded in ``BF16_MEASURED`` as ``fp32_blocks``; plain
``bf16`` when none is); ``bf16 whole`` = every layer of the network under autocast (how bf16 ran before: the
input rounded to 8 significant bits); ``fp16`` like ``bf16`` (the upscaler runs it on CUDA
only; on the CPU it is emulated by oneDNN for its values and not timed); ``fp32 tf32`` (CUDA
only): fp32 with TF32 convolutions, torch's default on a GPU (the reference is strict fp32).
Writes ``precision.json``/``.md`` and prints the :data:`medsr.inference.precision.BF16_MEASURED`
and :data:`~medsr.inference.precision.FP16_MEASURED` entries (checksum → measured change) that
``--precision auto`` reads.

    .venv/bin/python benchmarks/precision.py [--models fast-x2,default-x2] [--device cuda] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import re
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _machine import cpu_flags, machine

RESULTS = Path(__file__).parent / "results"
CT_FILES = ("bad_sequence.dcm", "explicit_VR-UN.dcm", "J2K_pixelrep_mismatch.dcm", "CT_small.dcm")
MR_FILES = ("MR-SIEMENS-DICOM-WithOverlays.dcm", "MR_small.dcm", "emri_small.dcm")


def _load(name: str, crop: int | None) -> Any:
    """A corpus image; with ``crop``, its central ``crop``² (at most 2 frames)."""
    from pydicom.data import get_testdata_file

    import medsr

    img = medsr.load_image(get_testdata_file(name))
    h, w = img.array.shape[-2:]
    if crop and (h > crop or w > crop):
        y, x = max(0, h // 2 - crop // 2), max(0, w // 2 - crop // 2)
        img = img.replace(array=np.ascontiguousarray(img.array[:2, y : y + crop, x : x + crop]))
    return img


def upscaler(model: str, scale: int, device: str, variant: str) -> Any:
    """A PlaneUpscaler running ``variant`` (fp32, bf16, bf16 whole, fp16)."""
    import torch

    from medsr.inference.planes import PlaneUpscaler

    emulated_fp16 = variant == "fp16" and not device.startswith("cuda")
    up = PlaneUpscaler(
        model, scale, device=device, precision="bf16" if emulated_fp16 else variant.split()[0]
    )
    if emulated_fp16:  # the upscaler runs fp16 on CUDA only; here oneDNN emulates it for the values
        up.precision, up.autocast_dtype = "fp16", torch.float16
    if variant.split()[0] != "fp32":  # each variant's own recipe, not the table's
        up._set_network(None, fp32_blocks=variant_blocks(variant))
    if variant == "fp32 tf32":  # torch's CUDA default for convolutions: 10 significant bits
        up._net_call = _with_tf32(up._net_call)
    if (
        variant.endswith("whole") and up.residual_split
    ):  # as before: the whole network under autocast
        up.residual_split = False
        up._net_call = up.net
    return up


#: the bf16 variant that keeps the network's first block in fp32 too (RLFN: ``detail(fp32_blocks=1)``)
FIRST_BLOCK = "bf16 first block fp32"


def blocks_variant(n: int) -> str:
    """The bf16 variant with the network's first ``n`` blocks in fp32 (``n = 0``: plain bf16)."""
    return "bf16" if n == 0 else FIRST_BLOCK if n == 1 else f"bf16 first {n} blocks fp32"


def variant_blocks(variant: str) -> int:
    """How many leading blocks ``variant`` keeps in fp32 (0 for every other variant)."""
    if variant == FIRST_BLOCK:
        return 1
    m = re.fullmatch(r"bf16 first (\d+) blocks fp32", variant)
    return int(m.group(1)) if m else 0


def _bf16_variants(row: dict[str, Any]) -> list[str]:
    """The row's bf16 variants in the order they were tried (plain, then 1, 2, … fp32 blocks)."""
    return [v for v in row["variants"] if v == "bf16" or variant_blocks(v)]


def _first_within(row: dict[str, Any]) -> str | None:
    """The first of the row's bf16 variants (plain, then 1, 2, … fp32 blocks) within the
    tolerance, or None."""
    from medsr.inference.precision import _within

    return next((v for v in _bf16_variants(row) if _within(row["variants"][v], "bf16")[0]), None)


def bf16_recipe(row: dict[str, Any]) -> str:
    """The bf16 variant ``auto`` would use for this model: the first of plain ``bf16``, the first
    block in fp32, the first 2, 3, … blocks within the tolerance, else ``bf16`` (then fp32 runs)."""
    return _first_within(row) or "bf16"


def _with_tf32(call: Any) -> Any:
    import torch

    def run(*args: Any) -> Any:
        cudnn = torch.backends.cudnn
        with cudnn.flags(
            enabled=True, benchmark=cudnn.benchmark, deterministic=False, allow_tf32=True
        ):
            return call(*args)

    return run


@contextlib.contextmanager
def as_before(variant: str) -> Iterator[None]:
    """For ``bf16 whole``: the layers that read and write intensities run under autocast too
    (``full_precision`` made a plain call), as every layer did before."""
    if not variant.endswith("whole"):
        yield
        return
    import medsr.models.blocks as blocks
    import medsr.models.efficient as efficient
    import medsr.models.srcnn as srcnn

    def plain(layer: Any, x: Any) -> Any:
        return layer(x)

    saved = [(m, m.full_precision) for m in (blocks, efficient, srcnn)]
    try:
        for m, _ in saved:
            m.full_precision = plain  # type: ignore[attr-defined]
        yield
    finally:
        for m, fn in saved:
            m.full_precision = fn  # type: ignore[attr-defined]


def hu_change(ref: Any, other: Any, images: list[Any]) -> dict[str, float]:
    """``other``'s outputs against ``ref``'s (image units) over ``images``, as ``--precision auto``
    judges them (:func:`medsr.inference.precision.ct_change`): the largest change at any pixel,
    in tissue, at steep edges (fraction of the step), and the RMS over every pixel."""
    from medsr.inference.precision import ct_change

    out = {"hu_max": 0.0, "hu_tissue_max": 0.0, "edge_max": 0.0}
    sq, n = 0.0, 0
    for img in images:
        a, b = ref.upscale(img).array, other.upscale(img).array
        c = ct_change(a, b, img.array, ref.scale)
        for k in out:
            out[k] = max(out[k], c[k])
        sq += c["hu_rms"] ** 2 * a.size
        n += a.size
    return {**out, "hu_rms": float(np.sqrt(sq / max(n, 1)))}


def psnrs(up: Any, pairs: list[tuple[Any, Any]], scale: int) -> list[float]:
    """PSNR (dB) of ``up`` on each (low-resolution input, reference) pair."""
    from medsr.metrics import data_range_for, psnr3d

    return [
        psnr3d(
            up.upscale(lr).array,
            hr.array,
            data_range=data_range_for(hr.array, hr.modality),
            crop=scale,
        )
        for lr, hr in pairs
    ]


def validation_pairs(scale: int, crop: int | None) -> dict[str, list[tuple[Any, Any]]]:
    """Per modality: (input degraded ×scale with bicubic, the image cropped to a multiple of scale)."""
    from medsr.degradations import degrade_image

    out: dict[str, list[tuple[Any, Any]]] = {}
    for group, names in (("CT", CT_FILES[:3]), ("MR", MR_FILES)):
        for name in names:
            hr = _load(name, crop)
            h, w = (n // scale * scale for n in hr.array.shape[-2:])
            hr = hr.replace(array=np.ascontiguousarray(hr.array[..., :h, :w]))
            out.setdefault(group, []).append((degrade_image(hr, "bicubic", scale), hr))
    return out


def speed_ms(up: Any, size: int, repeats: int) -> float:
    """Median ms of ``forward_tensor`` on one ``size``² plane on the upscaler's device."""
    import torch

    x = torch.rand(1, 1, size, size, device=up.device)
    if up.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    times = []
    with torch.inference_mode():
        for r in range(repeats + 1):
            t0 = time.perf_counter()
            up.forward_tensor(x)
            if up.device.type == "cuda":
                torch.cuda.synchronize()
            if r:
                times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def measure(
    model: str, device: str, crop: int | None, repeats: int, time_emulated: bool
) -> dict[str, Any]:
    from medsr.inference.precision import native_bf16, resolve_precision

    scale = int(re.search(r"-x(\d+)", model).group(1))  # fast-x2, default-x2-kspace
    ref = upscaler(model, scale, device, "fp32")
    split = ref.residual_split and "fp32_blocks" in inspect.signature(ref.net.detail).parameters
    ct = [_load(n, crop) for n in CT_FILES]
    pairs = validation_pairs(scale, crop)
    row: dict[str, Any] = {"model": model, "scale": scale, "checksum": ref.loaded.checksum, "crop": crop,
                           "residual_split": ref.residual_split, "variants": {}}  # fmt: skip
    size = min(crop or 512, 512)
    native = native_bf16(ref.device)[0]
    cuda = device.startswith("cuda")
    ref_psnr = {g: psnrs(ref, p, scale) for g, p in pairs.items()}
    row["fp32"] = {
        "psnr_db": {g: float(np.mean(v)) for g, v in ref_psnr.items()},
        "ms_512": speed_ms(ref, size, repeats),
        "plane": size,
    }

    def run(v: str) -> None:
        up = upscaler(model, scale, device, v)
        with as_before(v):
            hu = hu_change(ref, up, ct)
            dpsnr = {
                g: float(np.mean(np.subtract(psnrs(up, p, scale), ref_psnr[g])))
                for g, p in pairs.items()
            }
            timed = (
                cuda or (native and v != "fp16")
            ) or time_emulated  # emulated: up to 100× slower
            ms = speed_ms(up, size, repeats) if timed else None
        row["variants"][v] = {**hu, "psnr_change_db": dpsnr, "ms_512": ms}
        print(json.dumps({"model": model, "variant": v, **row["variants"][v]}), flush=True)

    run("bf16")
    if split:  # the first block in fp32; then, while none of fewer is within the tolerance, one
        # more block at a time (default-x4 since session 18: three of its four)
        for n in range(1, len(ref.net.blocks)):
            if n > 1 and _first_within(row):
                break
            run(blocks_variant(n))
    for v in ("bf16 whole", "fp16", *(["fp32 tf32"] if cuda else [])):
        run(v)
    row["auto_here"] = resolve_precision("auto", ref.device, ref.loaded.checksum, True)
    return row


def to_markdown(info: dict[str, Any]) -> str:
    from medsr.inference.precision import (
        BF16_TOLERANCE_EDGE,
        BF16_TOLERANCE_HU,
        BF16_TOLERANCE_HU_RMS,
        TISSUE_RANGE_HU,
        _within,
    )

    md = [
        f"bf16 against fp32 per shipped in-plane model. Machine: {info['machine']} (device {info['device']}). "
        "HU change: the corpus CT (3 slices at 512², CT_small at 128²) upscaled by the model "
        "(`medsr.inference.precision.ct_change`): the largest change in *tissue* (output pixels whose 3×3 "
        f"input neighbourhood spans less than {TISSUE_RANGE_HU:g} HU), at the other pixels (steep edges: tissue "
        "to air or bone) as a fraction of their neighbourhood's range, at any pixel, and the RMS change. "
        "PSNR change: mean over validation pairs (CT: the three 512² "
        "slices; MR: Siemens abdomen 484², MR_small, emri_small; degraded ×scale with bicubic). "
        "ms: what `medsr upscale` runs per 512² slice (base + network + low-band projection), median. "
        "`bf16`: the learned residual in bf16, base, add, normalisation and projection in fp32 (now); "
        "`bf16 first block fp32` (`first N blocks`): the same with the network's first block (first N "
        "blocks) in fp32 too (RLFN), measured while none of fewer is within the tolerance; the first "
        "within it is the recipe `auto` records; "
        "`bf16 whole`: the whole network under autocast (before). "
        "`fp16`: the same split in fp16 (emulated where the device is a CPU: values only). "
        f"Tolerance of `--precision auto`: at most {BF16_TOLERANCE_HU:g} HU in tissue, "
        f"{100 * BF16_TOLERANCE_EDGE:g} % of the step at steep edges, {BF16_TOLERANCE_HU_RMS:g} HU RMS; it takes fp16 on a "
        "CUDA GPU where the `fp16` change is within it, else bf16 where the device computes it natively and "
        "the `bf16` change is within it."
        + "".join(
            sorted(
                {
                    f" Images cropped to their central {r['crop']}² for {r['model']} (bf16 is emulated on this CPU)."
                    for r in info["rows"]
                    if r.get("crop")
                }
            )
        ),
        "",
        "| model | variant | HU max change in tissue | at steep edges (% of the step) | HU max change (any pixel) | HU RMS change | PSNR change CT (dB) | PSNR change MR (dB) | ms / slice | fp32 ms / slice | auto |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in info["rows"]:
        recipe = bf16_recipe(r)
        for v, m in r["variants"].items():
            ok = _within(m, v)[0]
            auto = {"fp16": "fp16 on CUDA" if ok else "not fp16"}.get(v, "")
            if v == recipe:
                auto = "bf16 where native" if ok else "fp32 (not within)"
            md.append(
                f"| {r['model']} | {v} | {m['hu_tissue_max']:.3g} | {100 * m['edge_max']:.2g} | {m['hu_max']:.3g} | "
                f"{m['hu_rms']:.3g} | {m['psnr_change_db'].get('CT', 0):+.4f} | "
                f"{m['psnr_change_db'].get('MR', 0):+.4f} | {_ms(m['ms_512'])} | {_ms(r['fp32']['ms_512'])} | {auto} |"
            )
    md += [
        "",
        f"Here `--precision auto` runs: {', '.join(sorted({r['auto_here'][0] + ' (' + r['auto_here'][1] + ')' for r in info['rows']}))}.",
    ]
    other = [r for r in info["rows"] if r.get("machine") and r["machine"] != info["machine"]]
    if other:  # a retrained model's row merged into an earlier run (its timings are that machine's)
        md += [
            "",
            "Rows measured on another machine (their ms are that machine's): "
            + "; ".join(f"{r['model']}: {r['machine']}" for r in other)
            + ".",
        ]
    return "\n".join(md) + "\n"


def _ms(v: float | None) -> str:
    return f"{v:.0f}" if v is not None else "not timed (emulated)"


def table_entries(info: dict[str, Any], variant: str = "bf16") -> str:
    """The :data:`BF16_MEASURED` (``variant="fp16"``: :data:`FP16_MEASURED`) entries for
    medsr/inference/precision.py."""
    lines = []
    for r in info["rows"]:
        v = bf16_recipe(r) if variant == "bf16" else variant
        m = r["variants"][v]
        blocks = f'"fp32_blocks": {variant_blocks(v)}, ' if variant_blocks(v) else ""
        lines.append(
            f'    "{r["checksum"]}": {{"model": "{r["model"]}", {blocks}"hu_tissue_max": {m["hu_tissue_max"]:.3g}, '
            f'"edge_max": {m["edge_max"]:.3g}, "hu_max": {m["hu_max"]:.3g}, "hu_rms": {m["hu_rms"]:.3g}, '
            f'"psnr_change_db": {m["psnr_change_db"].get("CT", 0):+.4f}}},'
        )
    return "\n".join(lines)


def run(out: Path, *, quick: bool = False, device: str = "cpu", src: str | None = None,
        models: str | None = None, repeats: int = 3, crop: int | None = None,
        time_emulated: bool = False) -> dict[str, Any]:  # fmt: skip
    """Measure every model, write ``precision.json``/``.md`` under ``out``; ``src`` is unused
    (the table describes the code it runs in)."""
    from medsr.models.resolver import list_pretrained

    # the shipped defaults (the seed baselines run fp32 under auto: measure them with --models)
    names = [m for m in (models or "").split(",") if m] or [
        m.name for m in list_pretrained(kind="in-plane") if m.name.startswith(("default-", "fast-"))
    ]
    if quick:
        names, repeats, crop = names[:1] if models else ["fast-x2"], 1, 64
    if device.startswith("cuda"):  # the fp32 reference is strict fp32: no TF32
        import torch

        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    rows: list[dict[str, Any]] = []
    out.mkdir(parents=True, exist_ok=True)
    for m in names:  # written after every model: a time limit keeps what was measured
        rows.append(measure(m, device, crop, repeats, time_emulated))
        info = {
            "machine": machine(load=True),
            "cpu_flags": cpu_flags(),
            "device": device,
            "rows": rows,
        }
        (out / "precision.json").write_text(json.dumps(info, indent=2) + "\n")
        md = to_markdown(info)
        (out / "precision.md").write_text(md)
    print(md)
    print("BF16_MEASURED entries:\n" + table_entries(info), flush=True)
    print("FP16_MEASURED entries:\n" + table_entries(info, "fp16"), flush=True)
    return info


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--models", default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument(
        "--crop",
        type=int,
        default=None,
        help="central crop of every image (e.g. 256: a quarter of the pixels, where bf16 is emulated)",
    )
    ap.add_argument(
        "--time-emulated", action="store_true", help="time bf16 even where it is emulated"
    )
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    from medsr.inference.memory import retain_freed_memory

    # as the medsr command does: freed planes stay with the process (no page faults per plane;
    # the ms before session 19 were measured without it, and the large planes paid for them)
    retain_freed_memory()
    run(
        args.out,
        quick=args.quick,
        device=args.device,
        models=args.models,
        repeats=args.repeats,
        crop=args.crop,
        time_emulated=args.time_emulated,
    )


if __name__ == "__main__":
    main()
