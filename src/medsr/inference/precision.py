"""Network arithmetic: fp32, bf16 or fp16 for the learned part, and what ``auto`` picks.

**What runs in reduced precision.** Only the *learned residual*. The shipped networks add their
detail to a bicubic base (``residual_base = "bicubic"`` with a :meth:`detail` method: RLFN with
``global_residual``, VDSR, residual5); :class:`medsr.inference.planes.PlaneUpscaler` then computes
the base, the add, the low-band projection and the normalisation in fp32 and runs only
``net.detail`` under autocast. A CT value of 3,000 HU rounded to bf16 (8 significant bits) moves
by up to 8 HU; a detail of ±50 HU by a fraction of one. Networks without that split (SRCNN)
run whole under autocast, as before.

**``auto``** picks a reduced precision only for a model whose change was measured within the
tolerance, on a device that computes it natively; ``fp32`` otherwise:

1. **The tolerance** (:func:`ct_change`, measured by ``benchmarks/precision.py``: the corpus CT
   slices upscaled by the model in fp32 and in the reduced precision). An output pixel is
   *tissue* when its 3×3 input neighbourhood spans less than :data:`TISSUE_RANGE_HU`; there the
   change may be at most :data:`BF16_TOLERANCE_HU`. A pixel on a steeper edge (tissue to air or
   bone) may change by at most :data:`BF16_TOLERANCE_EDGE` of the step it sits on — a
   partial-volume value whose change moves the edge by about 1/50 of a pixel. And the RMS
   change over every pixel at most :data:`BF16_TOLERANCE_HU_RMS`. Until session 11 the 5 HU held
   at every pixel: every general model failed it on the few pixels of a ±1,000 HU step, the
   fast models there alone (fast-x2: 11.6 HU at a 1,200 HU step, 2.2 HU in tissue), the
   defaults in tissue too (10.6 and 14.1 HU; 3.9 and 4.1 HU with their first block in fp32,
   the recipe ``bf16`` runs for them: ``fp32_blocks``), so the rule now separates what bf16 does
   to CT numbers from what it does to an edge's sub-pixel position. The measurements are kept in
   :data:`BF16_MEASURED` / :data:`FP16_MEASURED` under the weights' checksum, so a retrained or
   unknown model gets fp32 until it is measured.
2. **The device**: on a CUDA GPU with fp16 tensor cores (compute capability 7.0 or later)
   ``auto`` takes ``fp16`` for a model within the tolerance in fp16 — it keeps 11 significant
   bits to bf16's 8 and changes CT outputs about eight times less at the same tensor-core speed
   (its smaller range, 65,504, is guarded: a learned residual that overflows is computed again
   in fp32, :meth:`medsr.inference.planes.PlaneUpscaler.forward_tensor`) — else ``bf16`` where
   the GPU computes it natively and the model is within the tolerance in bf16. On a CPU, bf16
   where it is native: AVX-512 BF16 or AMX (``avx512_bf16`` / ``amx_bf16`` in
   ``/proc/cpuinfo``); elsewhere bf16 is emulated and no faster than fp32.

``fp16`` runs on CUDA only (the same residual-only split).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medsr.errors import InvalidParameterError

__all__ = [
    "BF16_MEASURED",
    "BF16_TOLERANCE_EDGE",
    "BF16_TOLERANCE_HU",
    "BF16_TOLERANCE_HU_RMS",
    "FP16_MEASURED",
    "PRECISIONS",
    "PRECISION_CHOICES",
    "PRECISION_HELP",
    "TISSUE_RANGE_HU",
    "bf16_fp32_blocks",
    "check_precision",
    "check_precision_on",
    "ct_change",
    "native_bf16",
    "native_fp16",
    "resolve_precision",
]

#: network arithmetic → torch autocast dtype (``fp32``: none; the default, and what the model
#: cards' numbers were measured with)
PRECISIONS = {"fp32": None, "bf16": "bfloat16", "fp16": "float16"}
#: what callers may ask for: a precision, or ``auto`` (see the module docstring)
PRECISION_CHOICES = (*PRECISIONS, "auto")
#: the help of ``--precision`` on every command that takes it (``medsr upscale``, ``medsr batch``,
#: ``medsr pacs upscale``/``watch``), so that they describe it in the same words
PRECISION_HELP = (
    "Network arithmetic: fp32 (default); auto (on a CUDA GPU fp16, else bf16 where the CPU has "
    "AVX-512 BF16/AMX, for models whose measured change on CT is within tolerance: 5 HU in "
    "tissue, 2 % of the step at steep edges; fp32 otherwise); bf16 (the learned residual only, "
    "with the model's measured recipe: about 1.4-2x faster where native, emulated and very slow "
    "elsewhere); fp16 (CUDA)."
)

#: ``auto`` takes a reduced precision only for a model whose measured change on the corpus CT is
#: at most this many HU at any *tissue* pixel (:func:`ct_change`): a fifth of the 25 HU that
#: running the whole network in bf16 reached, and below the quantum noise of a routine CT (10 HU
#: and more) and the ±4 HU of a CT's water calibration ...
BF16_TOLERANCE_HU = 5.0
#: ... an output pixel is tissue when its 3×3 input neighbourhood spans less than this (HU):
#: soft tissue, fat and muscle, contrast-filled vessels; tissue-to-air and bone edges span more
TISSUE_RANGE_HU = 500.0
#: ... at most this fraction of the local step at a steeper edge's pixel (a partial-volume value:
#: changing it by 2 % of the step moves the edge by about 1/50 of a pixel) ...
BF16_TOLERANCE_EDGE = 0.02
#: ... and at most this RMS change (HU): half the 1 HU step CT values are stored in
BF16_TOLERANCE_HU_RMS = 0.5

#: bf16 (learned residual only) against fp32 on the corpus CT, per shipped weights checksum,
#: measured by ``benchmarks/precision.py`` (``benchmarks/results/precision.md``; session 11, on a
#: CPU with native AVX-512 BF16) over bad_sequence.dcm, explicit_VR-UN.dcm,
#: J2K_pixelrep_mismatch.dcm and CT_small.dcm, whole slices, upscaled by the model's factor
#: (:func:`ct_change`: ``hu_tissue_max``, ``edge_max`` as a fraction of the step, ``hu_rms``;
#: ``hu_max`` is the largest change at any pixel, for the record), and the PSNR change on the CT
#: validation pairs, for the model's bf16 *recipe*: plain (only the head in fp32) when that is
#: within the tolerance, else with its first block in fp32 too (``fp32_blocks``: the general
#: defaults, whose plain bf16 changes tissue by 10.6–14.1 HU and 3.9–4.1 HU with that block),
#: else the fewest leading blocks in fp32 that are (session 18's ``default-x4``: 19.9 HU plain,
#: 7.8 / 6.3 / 1.8 HU with one / two / three of its four blocks in fp32; measured in session 19
#: on an Intel Xeon with AMX, where its three-block recipe takes 583 ms a 512² plane, fp32 686).
#: Every entry re-measured in session 22 on that Xeon, once RLFN ran its convolutions' pointwise
#: steps inside them in inference (:mod:`medsr.models.fused`) and its attention's upsampling as a
#: transposed convolution: the same recipes, every change within the tolerance
#: (``benchmarks/results/speed_xeon_amx/precision.md``); again in session 23, once the sums of
#: its skips ran in the autocast dtype (:func:`medsr.models.blocks.autocast_input`) and a head
#: with no fp32 block after it in bf16 to fp32's accuracy (:func:`medsr.models.fused.conv_to_bf16`):
#: and its attention's first reduction folded into the convolutions that read it
#: (:func:`medsr.models.fused.folded`): the same recipes, CT tissue 1.4–3.8 HU at most.
#: ``--precision bf16`` runs the recipe (:func:`bf16_fp32_blocks`). Models not listed run fp32
#: under ``auto`` and plain bf16 under ``--precision bf16``.
BF16_MEASURED: dict[str, dict[str, Any]] = {
    "sha256:41672f87dc97852945e2b4bf47e2df646ad6c5fa705785b9cc83acc98a4b56e2": {"model": "default-x2-kspace", "hu_tissue_max": 1.38, "edge_max": 0.00282, "hu_max": 3.42, "hu_rms": 0.157, "psnr_change_db": -0.0140},
    "sha256:74605b4ca8ec35ea2d01e89ee9a43b74536dec09cce26fd5117b963d850ed014": {"model": "default-x2", "fp32_blocks": 1, "hu_tissue_max": 2.79, "edge_max": 0.00635, "hu_max": 7.56, "hu_rms": 0.187, "psnr_change_db": -0.0144},
    "sha256:483b2054bd1d75d29eb19300ea8ebc8b9903826a7741df25f835efe37c3f1166": {"model": "default-x4-kspace", "hu_tissue_max": 2.7, "edge_max": 0.00303, "hu_max": 3.54, "hu_rms": 0.2, "psnr_change_db": -0.0029},
    "sha256:94e909c61bf94c44fe81ade9f8e48d9291fef63ee6feb746bb03c759e9bf12ea": {"model": "default-x4", "fp32_blocks": 3, "hu_tissue_max": 2.09, "edge_max": 0.00818, "hu_max": 9.74, "hu_rms": 0.22, "psnr_change_db": -0.0054},
    "sha256:127fa1e062eca4bed1217522c367323255ef10e9676f12751657bac3866af59f": {"model": "fast-x2-kspace", "hu_tissue_max": 1.53, "edge_max": 0.00288, "hu_max": 3.23, "hu_rms": 0.19, "psnr_change_db": -0.0307},
    "sha256:e63480e30e75aee94a3d06d33c4ff5a1c9c3eb5e08678e523779e38b0b733b48": {"model": "fast-x2", "hu_tissue_max": 2.24, "edge_max": 0.00806, "hu_max": 9.78, "hu_rms": 0.303, "psnr_change_db": -0.0805},
    "sha256:cb16f972003de6224055bc89ce19c3a99e0bd6bd6cdc4bfcf467d141690c1809": {"model": "fast-x4-kspace", "hu_tissue_max": 2.62, "edge_max": 0.00508, "hu_max": 6.24, "hu_rms": 0.23, "psnr_change_db": -0.0031},
    "sha256:414a4475cf8fef52f067b363e5c0a5988a7ed3a99c5d379c009c4c58c892bf4f": {"model": "fast-x4", "hu_tissue_max": 3.76, "edge_max": 0.0111, "hu_max": 13.5, "hu_rms": 0.281, "psnr_change_db": +0.0044},
}  # fmt: skip


#: fp16 (learned residual only) against fp32, as :data:`BF16_MEASURED` and measured the same way
#: by ``benchmarks/precision.py``; ``auto`` uses it on CUDA GPUs. Measured (session 11; again in
#: sessions 22 and 23 on the Xeon, with the fused convolutions and one-dtype skips) with fp16 emulated on the CPU (torch's CPU
#: autocast to float16) — a GPU's fp16 convolutions may round differently, so ``benchmarks/device_check.sh`` measures fp16 on the GPU too, and the CUDA
#: tests check the tolerance there. fp16 changes the shipped models' CT output in tissue by
#: 0.21–2.5 HU at most (session 23; bf16 without a recipe: 1.3–14 HU in session 11).
FP16_MEASURED: dict[str, dict[str, Any]] = {
    "sha256:41672f87dc97852945e2b4bf47e2df646ad6c5fa705785b9cc83acc98a4b56e2": {"model": "default-x2-kspace", "hu_tissue_max": 0.205, "edge_max": 0.000352, "hu_max": 0.451, "hu_rms": 0.0204, "psnr_change_db": +0.0007},
    "sha256:74605b4ca8ec35ea2d01e89ee9a43b74536dec09cce26fd5117b963d850ed014": {"model": "default-x2", "hu_tissue_max": 1, "edge_max": 0.00161, "hu_max": 1.45, "hu_rms": 0.0349, "psnr_change_db": -0.0018},
    "sha256:483b2054bd1d75d29eb19300ea8ebc8b9903826a7741df25f835efe37c3f1166": {"model": "default-x4-kspace", "hu_tissue_max": 0.316, "edge_max": 0.000409, "hu_max": 0.455, "hu_rms": 0.0246, "psnr_change_db": -0.0003},
    "sha256:94e909c61bf94c44fe81ade9f8e48d9291fef63ee6feb746bb03c759e9bf12ea": {"model": "default-x4", "hu_tissue_max": 2.46, "edge_max": 0.00447, "hu_max": 3.07, "hu_rms": 0.0453, "psnr_change_db": -0.0009},
    "sha256:127fa1e062eca4bed1217522c367323255ef10e9676f12751657bac3866af59f": {"model": "fast-x2-kspace", "hu_tissue_max": 0.252, "edge_max": 0.000347, "hu_max": 0.421, "hu_rms": 0.0243, "psnr_change_db": +0.0007},
    "sha256:e63480e30e75aee94a3d06d33c4ff5a1c9c3eb5e08678e523779e38b0b733b48": {"model": "fast-x2", "hu_tissue_max": 0.276, "edge_max": 0.000498, "hu_max": 0.551, "hu_rms": 0.0383, "psnr_change_db": -0.0003},
    "sha256:cb16f972003de6224055bc89ce19c3a99e0bd6bd6cdc4bfcf467d141690c1809": {"model": "fast-x4-kspace", "hu_tissue_max": 0.342, "edge_max": 0.00128, "hu_max": 1.56, "hu_rms": 0.0295, "psnr_change_db": -0.0003},
    "sha256:414a4475cf8fef52f067b363e5c0a5988a7ed3a99c5d379c009c4c58c892bf4f": {"model": "fast-x4", "hu_tissue_max": 0.522, "edge_max": 0.00108, "hu_max": 1.19, "hu_rms": 0.0359, "psnr_change_db": -0.0006},
}  # fmt: skip


def check_precision(precision: str, *, allow_auto: bool = True) -> str:
    """``precision`` (any case) as one of :data:`PRECISION_CHOICES` (``auto`` only when
    ``allow_auto``), else a clear error."""
    choices = PRECISION_CHOICES if allow_auto else tuple(PRECISIONS)
    name = precision.strip().lower() if isinstance(precision, str) else precision
    if name not in choices:
        raise InvalidParameterError(
            f"precision must be one of {', '.join(choices)}; got {precision!r}"
        )
    return name


def check_precision_on(precision: str, device_type: str) -> None:
    """fp16 runs on a CUDA GPU only: one clear error for it on any other device (the upscaler
    when its device is known, the option check before any input is read)."""
    if precision == "fp16" and device_type != "cuda":
        raise InvalidParameterError(
            "precision fp16 runs on a CUDA GPU only; use bf16 or fp32 on the CPU"
        )


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def native_bf16(device: Any) -> tuple[bool, str]:
    """Whether ``device`` (a ``torch.device``) computes bf16 natively, and what says so."""
    import torch

    if device.type == "cuda":
        ok = bool(torch.cuda.is_bf16_supported(including_emulation=False))
        return ok, f"{torch.cuda.get_device_name(device)}: {'native' if ok else 'no native'} bf16"
    if device.type == "cpu":
        found = sorted(_cpu_flags() & {"avx512_bf16", "amx_bf16"})
        return bool(found), (
            "CPU has " + " and ".join(found)
        ) if found else "CPU without AVX-512 BF16 or AMX"
    return False, f"{device.type}: bf16 not known to be native"


def resolve_precision(precision: str, device: Any, checksum: str, learned: bool) -> tuple[str, str]:
    """The precision to run (``fp32``/``bf16``/``fp16``) for a request, and why.

    ``auto`` (see the module docstring) → on a CUDA GPU with fp16 tensor cores, ``fp16`` when the
    model (by ``checksum``) is in :data:`FP16_MEASURED` within the tolerance; else ``bf16`` when
    the device computes it natively and the model is in :data:`BF16_MEASURED` within it;
    ``fp32`` otherwise. Other requests are returned as they are, but for a classical
    interpolator, which has no learned part: it runs in fp32 whatever is asked (and says so;
    ``--model lanczos --precision bf16`` was recorded as ``precision bf16``).
    """
    precision = check_precision(precision)
    if not learned and precision != "fp32":  # nothing runs in reduced precision: say what ran
        return "fp32", f"{precision}: a classical interpolator has no learned part"
    if precision != "auto":
        return precision, "requested"
    fp16_native, fp16_why = native_fp16(device)
    if fp16_native:  # the more precise of the two at the same tensor-core speed
        fp16 = _within(FP16_MEASURED.get(checksum), "fp16")
        if fp16[0]:
            return "fp16", f"auto: {fp16_why}; {fp16[1]}"
    native, why = native_bf16(device)
    bf16 = _within(BF16_MEASURED.get(checksum), "bf16") if native else (False, f"auto: {why}")
    if bf16[0]:
        return "bf16", f"auto: {why}; {bf16[1]}"
    return "fp32", bf16[1]


def ct_change(ref: Any, low: Any, image: Any, scale: int) -> dict[str, float]:
    """How far ``low`` (an upscale in reduced precision) is from ``ref`` (the same in fp32), in
    the image's units (HU for CT), for :data:`BF16_MEASURED`'s tolerance.

    ``ref``/``low``: ``(…, H·s, W·s)`` outputs; ``image``: the ``(…, H, W)`` input they were made
    from. Returns ``hu_max`` (any pixel), ``hu_tissue_max`` (pixels whose 3×3 input
    neighbourhood spans less than :data:`TISSUE_RANGE_HU`), ``edge_max`` (the largest change at
    the other pixels as a fraction of their neighbourhood's range; 0 when there are none) and
    ``hu_rms``.
    """
    import numpy as np
    from scipy.ndimage import maximum_filter, minimum_filter

    a = np.asarray(image, dtype=np.float64)
    size = (1,) * (a.ndim - 2) + (3, 3)
    span = maximum_filter(a, size=size, mode="nearest") - minimum_filter(
        a, size=size, mode="nearest"
    )
    span = np.repeat(np.repeat(span, scale, axis=-2), scale, axis=-1)
    d = np.abs(np.asarray(low, dtype=np.float64) - np.asarray(ref, dtype=np.float64))
    if span.shape != d.shape:
        raise ValueError(f"outputs {d.shape} do not match the input {a.shape} at ×{scale}")
    tissue = span < TISSUE_RANGE_HU
    return {
        "hu_max": float(d.max()) if d.size else 0.0,
        "hu_tissue_max": float(d[tissue].max()) if tissue.any() else 0.0,
        "edge_max": float((d[~tissue] / span[~tissue]).max()) if (~tissue).any() else 0.0,
        "hu_rms": float(np.sqrt(np.mean(d**2))) if d.size else 0.0,
    }


def bf16_fp32_blocks(checksum: str) -> int:
    """How many leading blocks of a model's network run in fp32 when it runs bf16: its measured
    recipe (``fp32_blocks`` in :data:`BF16_MEASURED`; 0 when not measured)."""
    return int((BF16_MEASURED.get(checksum) or {}).get("fp32_blocks", 0))


def native_fp16(device: Any) -> tuple[bool, str]:
    """Whether ``device`` runs fp16 on tensor cores (a CUDA GPU of compute capability ≥ 7.0)."""
    if device.type != "cuda":
        return False, f"{device.type}: fp16 runs on a CUDA GPU only"
    import torch

    major, minor = torch.cuda.get_device_capability(device)
    name = torch.cuda.get_device_name(device)
    ok = (major, minor) >= (7, 0)
    return (
        ok,
        f"{name} (compute capability {major}.{minor}): {'' if ok else 'no '}fp16 tensor cores",
    )


def _within(measured: dict[str, Any] | None, dtype: str) -> tuple[bool, str]:
    """Whether a measured change is within the tolerance, and the reason in words (an entry
    without the tissue/edge split is held to :data:`BF16_TOLERANCE_HU` at every pixel)."""
    if measured is None:
        return False, f"auto: {dtype} not measured for this model (benchmarks/precision.py)"
    hu_max, hu_rms = float(measured["hu_max"]), float(measured["hu_rms"])
    tissue = float(measured.get("hu_tissue_max", hu_max))
    edge = measured.get("edge_max")
    if tissue > BF16_TOLERANCE_HU or hu_rms > BF16_TOLERANCE_HU_RMS:
        return False, (
            f"auto: {dtype} changes this model's CT output by up to {tissue:.2g} HU in tissue "
            f"and {hu_rms:.2g} HU RMS (tolerance {BF16_TOLERANCE_HU:g} HU, {BF16_TOLERANCE_HU_RMS:g} HU RMS)"
        )
    if edge is None and hu_max > BF16_TOLERANCE_HU:
        return False, (
            f"auto: {dtype} changes this model's CT output by up to {hu_max:.2g} HU "
            f"(tolerance {BF16_TOLERANCE_HU:g} HU)"
        )
    if edge is not None and float(edge) > BF16_TOLERANCE_EDGE:
        return False, (
            f"auto: {dtype} changes this model's CT output at steep edges by up to "
            f"{100 * float(edge):.2g} % of the step (tolerance {100 * BF16_TOLERANCE_EDGE:g} %)"
        )
    where = f"at most {tissue:.2g} HU in tissue" + (
        f", {100 * float(edge):.2g} % of the step at steep edges" if edge is not None else ""
    )
    blocks = int(measured.get("fp32_blocks", 0))
    how = (
        (" (its first block in fp32)" if blocks == 1 else f" (its first {blocks} blocks in fp32)")
        if blocks
        else ""
    )
    return True, f"{dtype}{how} changes this model's CT output by {where}"
