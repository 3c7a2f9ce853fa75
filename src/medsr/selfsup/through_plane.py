"""Through-plane super-resolution of thick-slice volumes: a learned prior, adapted per volume.

A volume acquired as thick slices (z spacing coarser than the in-plane pixel size) is sharp
in-plane and blurred + under-sampled along z. medsr restores z in three steps:

1. **the prior** — a one-axis network (``edsr-1d``, shipped as ``tp-x2``/``tp-x4``) trained with
   ``task: through-plane`` on 2-D planes of many patients' CT and MR whose rows were made thick
   with random Gaussian/box slice profiles (:func:`medsr.degradations.thick_slice`);
2. **adaptation** (optional, ``adapt_steps``) — SMORE's observation (C. Zhao et al., "SMORE: a
   self-supervised anti-aliasing and super-resolution algorithm for MRI using deep learning",
   IEEE TMI 40(3):805–817, 2021) that the in-plane data show what the anatomy looks like at high
   resolution: the volume's axial slices, degraded along y (and x) with its slice profile (given,
   from the header, or estimated: :mod:`medsr.selfsup.slice_profile`), fine-tune the prior for
   a fixed number of seeded optimiser steps (reproducible, independent of the machine's load);
3. the network runs on every sagittal ``(z, y)`` and coronal ``(z, x)`` plane with z as the
   upsampled axis, the two orientations are averaged (their disagreement is the uncertainty
   map), and the volume (``f × Z`` slices, ``f`` = 2 or 4) is resampled along z (cubic) to the
   isotropic or requested spacing; with a known slice profile it is then projected exactly onto
   the measured slices on that grid (:func:`_project_thick_slice`).

Without a prior the network starts as cubic interpolation and adaptation trains it (plain
SMORE). The output grid is medsr's one grid rule for through-plane outputs
(:mod:`medsr.slice_grid`, shared with ``medsr interpolate``): cell-centred, same field of view,
``n = round(Z·s_z / target)`` slices of spacing ``Z·s_z / n`` — the target exactly when that is
a whole number. :func:`interpolate_z` gives the linear/cubic interpolation baselines on the
same grid.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from medsr.errors import InvalidParameterError, positive_number
from medsr.image import MedImage
from medsr.io.padding import COMPUTE, NoData, carry_nonfinite, fill_no_data, mean_over_held
from medsr.slice_grid import (
    check_frames_are_slices,
    check_target_spacing,
    keep_no_data,
    on_grid,
    output_slices,
    resize_axis,
    slice_spacing,
    slice_thickness_mm,
)

__all__ = [
    "PRIOR_FACTORS",
    "interpolate_z",
    "network_factor",
    "output_slices",
    "prior_name",
    "slice_thickness_mm",
    "through_plane_upscale",
]

METHOD = "zero-shot self-supervised"


def _check_volume(image: Any, what: str) -> MedImage:
    if not isinstance(image, MedImage):
        raise InvalidParameterError(f"{what} needs a MedImage, got {type(image).__name__}")
    if image.spatial_shape[0] < 2:
        raise InvalidParameterError(
            f"{what} needs a volume (several slices); this image is a single 2-D slice — "
            "use in-plane upscaling instead"
        )
    if image.spatial_shape[1] < 2 or image.spatial_shape[2] < 2:
        raise InvalidParameterError(f"{what}: the slices are too small ({image.spatial_shape[1:]})")
    check_frames_are_slices(image, what)
    return image


def _check_target(image: MedImage, target_spacing: Any) -> float:
    return check_target_spacing(image, target_spacing, axis=0)


def _project_thick_slice(
    fused: torch.Tensor, vol: torch.Tensor, profile: str, thickness: float, chunk: int = 1 << 16
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Data consistency along z: make the thick slices of ``fused`` reproduce the measured ones.

    ``fused`` (C, N, Y, X) is the output on its final grid (any ``N``: after the resampling to
    the target spacing; corrected in place) and ``vol`` (C, Z, Y, X) the measured slices, both
    in the same units;
    ``thickness`` is the profile's width in measured slice spacings. With ``W`` the measurement
    of the output grid (:func:`medsr.degradations.thick_slice.thick_slice_matrix`, ``Z × N``) and
    ``U`` the grid's cubic resampler from ``Z`` to ``N`` slices (``N × Z``), each (y, x) column
    gets the exact oblique projection ``x + U (W U)⁻¹ (y − W x)``: ``W x = y`` afterwards to float
    rounding, the correction a smooth (cubic) function of z. It replaced an iterative
    back-projection on the network's ``f·Z`` grid, which the final resampling then partly undid
    (``benchmarks/through_plane_projection.py``: the written output's consistency error and its
    PSNR against the truth, before and after).
    """
    from medsr.degradations.thick_slice import thick_slice_matrix
    from medsr.slice_grid import resize_axis

    c, n = fused.shape[:2]
    z = vol.shape[1]
    w = thick_slice_matrix(z, n, profile=profile, thickness=thickness)
    eye = torch.eye(z, dtype=torch.float64).reshape(1, z, z, 1)
    u = resize_axis(eye, 1, n, "cubic")[0, :, :, 0].numpy()  # column k: slice k resampled
    gain = u @ np.linalg.inv(w @ u)  # (N, Z): the correction of a residual
    w32 = torch.from_numpy(w.astype(np.float32))
    g32 = torch.from_numpy(gain.astype(np.float32))
    out = fused.reshape(c, n, -1)  # in place: no second output-sized copy
    meas = vol.reshape(c, z, -1)
    worst = 0.0
    for ch in range(c):
        for k in range(0, out.shape[-1], chunk):
            x = out[ch, :, k : k + chunk]
            x += g32 @ (meas[ch, :, k : k + chunk] - w32 @ x)
            worst = max(worst, float((meas[ch, :, k : k + chunk] - w32 @ x).abs().max()))
    rng = max(float(vol.max() - vol.min()), 1e-12)
    return out.reshape(fused.shape), {
        "setting": "on",
        "method": "exact thick-slice projection on the output grid (cubic correction along z)",
        "residual_max": worst / rng,
        "converged": worst / rng <= 1e-3,
    }


def _resize_z(vol: torch.Tensor, n: int, mode: str) -> torch.Tensor:
    """``(C, Z, Y, X)`` → ``(C, n, Y, X)`` along z only (the grid rule's resampler)."""
    return resize_axis(vol, 1, n, mode)


def interpolate_z(
    image: MedImage,
    *,
    target_spacing: float | None = None,
    mode: str = "linear",
    n_slices: int | None = None,
    no_data: NoData = COMPUTE,
) -> MedImage:
    """Resample a volume along z only (linear or cubic), same field of view.

    Args:
        image: a volume.
        target_spacing: slice spacing to aim for (mm; default the finer in-plane spacing, i.e.
            isotropic); the volume gets ``round(Z·s_z / target)`` slices.
        mode: ``linear``, ``cubic`` (Keys, a = −0.75) or ``nearest``.
        n_slices: exact number of output slices instead of ``target_spacing``.
        no_data: the volume's :func:`medsr.io.padding.no_data_mask` where the caller has it
            (:func:`medsr.io.padding.no_data_of`).

    No data (:func:`medsr.io.padding.no_data_mask`) is resampled as the darkest measured value
    and kept exact where both input slices around an output slice hold none
    (:func:`medsr.slice_grid.keep_no_data`), as every through-plane output keeps it.
    """
    _check_volume(image, "z interpolation")
    if mode not in ("linear", "cubic", "nearest"):
        raise InvalidParameterError(f"mode must be linear, cubic or nearest, got {mode!r}")
    if n_slices is None:
        n = output_slices(image, _check_target(image, target_spacing))
    else:
        if int(n_slices) != n_slices or n_slices < 1:
            raise InvalidParameterError(f"n_slices must be a positive integer, got {n_slices!r}")
        n = int(n_slices)
    work, no_data, _ = fill_no_data(image, no_data)  # never signal: kept exact below
    cf = torch.from_numpy(np.ascontiguousarray(work.channel_first()))
    out = _resize_z(cf, n, mode).numpy()
    if no_data is not None:
        mask = no_data if image.channels else no_data[None]
        keep_no_data(out, image.channel_first(), mask, axis=1)
    arr = out if image.channels else out[0]
    sr = on_grid(image, arr, step=f"through-plane {mode} interpolation to {n} slices")
    sr = carry_nonfinite(image, sr, axis=0)
    meta = dict(sr.meta)
    meta["derivation"] = {
        "method": "interpolation",
        "model": f"{mode}-z",
        "scale": round(n / image.spatial_shape[0], 4),
        "axes": "through-plane (z)",
        "model_version": None,
    }
    return sr.replace(meta=meta)


#: network factors of the shipped priors (``tp-x2``, ``tp-x4``)
PRIOR_FACTORS = (2, 4)


def network_factor(ratio: float) -> int:
    """The factor the through-plane network runs at for an upsampling ``ratio`` along z
    (output slices / input slices): ×2 below 2.5, else ×4; the fused volume is then resampled
    along z (cubic) to the output grid, so any ratio and target spacing work."""
    return 2 if ratio < 2.5 else 4


def prior_name(factor: int) -> str:
    """The shipped through-plane prior for a network factor (``tp-x2``, ``tp-x4``)."""
    return f"tp-x{factor}"


def _resolve_prior(prior: Any, factor: int) -> Any:
    """``"auto"`` → the shipped ``tp-x{factor}`` if this installation has it, else ``None``;
    ``None``/``"none"`` → ``None`` (a fresh network); a shipped name or file → that model."""
    from medsr.models.resolver import resolve_model, shipped_weights

    if prior is None or (isinstance(prior, str) and prior.strip().lower() in ("none", "scratch")):
        return None
    if isinstance(prior, str) and prior.strip().lower() in ("auto", "default"):
        name = prior_name(factor)
        return resolve_model(name, kinds=("through-plane",)) if name in shipped_weights() else None
    loaded = resolve_model(prior, kinds=("through-plane",))
    got = int(loaded.card.get("scale", loaded.card.get("kwargs", {}).get("scale", factor)))
    if got != factor:
        raise InvalidParameterError(
            f"the through-plane model {loaded.name!r} is for ×{got}; this volume needs a ×{factor} "
            f"network (slice spacing / pixel size); use {prior_name(factor)} or prior='auto'"
        )
    return loaded


def _slice_profile(image: MedImage, slice_thickness: Any, profile: str | None) -> dict[str, Any]:
    """The slice profile: given by the caller, from the header, or estimated from the volume."""
    from medsr.selfsup.slice_profile import default_profile, estimate_slice_profile

    if profile is not None and profile not in ("gaussian", "box"):
        raise InvalidParameterError(f"slice profile must be gaussian or box, got {profile!r}")
    shape = profile or default_profile(image)
    if slice_thickness is not None:
        t = positive_number(slice_thickness, "slice thickness", "mm")
        return {"thickness_mm": t, "profile": shape, "source": "given"}
    header = slice_thickness_mm(image)
    if header is not None:
        return {"thickness_mm": header, "profile": shape, "source": "header"}
    est = estimate_slice_profile(image, shape)
    if est["thickness_mm"] is None:
        return {"thickness_mm": slice_spacing(image), "profile": shape, "source": "spacing"}
    return est


def through_plane_upscale(
    image: MedImage,
    *,
    target_spacing: float | None = None,
    slice_thickness: float | None = None,
    profile: str | None = None,
    prior: Any = "auto",
    adapt_steps: int = 0,
    budget_s: float | None = None,
    epochs: int | None = None,
    patch_size: int = 64,
    patches_per_epoch: int = 10_000,
    batch_size: int = 8,
    augment: bool = True,
    init: str | os.PathLike[str] | None = None,
    model: str = "residual5-1d",
    model_kwargs: dict[str, Any] | None = None,
    lr: float | None = None,
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
    clip: bool = True,
    consistency: bool | str = False,
    maps: bool = False,
    on_progress: Callable[[float], None] | None = None,
    no_data: NoData = COMPUTE,
) -> MedImage:
    """Super-resolve a thick-slice volume along z: the learned prior, optionally adapted to it.

    1. **Prior** (``prior="auto"``): the shipped one-axis network for the volume's factor
       (``tp-x2``/``tp-x4``, trained on many patients' CT and MR, :func:`network_factor`)
       runs on every sagittal ``(z, y)`` and coronal ``(z, x)`` plane; the two are averaged.
    2. **Adaptation** (``adapt_steps > 0``): before that, the network is fine-tuned on this
       volume's own axial slices degraded along y and x with its slice profile (SMORE's idea),
       for exactly ``adapt_steps`` optimiser steps — seeded, so two runs give identical outputs
       whatever the machine's load. ``budget_s``/``epochs`` are further (optional) limits;
       a time budget makes the result depend on the machine.
    3. The fused volume (``f × Z`` slices) is resampled along z (cubic) to the output grid.

    Without a shipped prior (``prior=None``, or a factor no prior covers) the network starts as
    cubic interpolation (a fresh ``model`` whose residual is zero) and adaptation trains it
    from there (the original SMORE set-up).

    Args:
        image: a volume whose slice spacing is coarser than ``target_spacing``.
        target_spacing: output slice spacing in mm (default: the finer in-plane spacing, i.e.
            isotropic voxels). The field of view is kept (:mod:`medsr.slice_grid`).
        slice_thickness: slice-profile width in mm (default: the header's SliceThickness, else
            estimated from the volume, :func:`medsr.selfsup.slice_profile.estimate_slice_profile`).
        profile: ``gaussian`` (FWHM = thickness, MR excitation) or ``box`` (CT detector
            binning); default by modality (box for CT, Gaussian otherwise).
        prior: ``"auto"`` (the shipped prior), a shipped name (``tp-x2``), a ``.safetensors``
            file of a through-plane model, or ``None`` (start from cubic interpolation).
        adapt_steps: optimiser steps of per-volume adaptation (0: the prior alone).
        init: deprecated alias of ``prior`` (a file to start from).
        model, model_kwargs: the architecture used when there is no prior.
        consistency: data consistency along z — an exact projection of the output on its
            final grid so that, made thick with the slice profile, it reproduces the measured
            slices (before the clip to the input's range): ``"on"``/``True``,
            ``"off"``/``False``, or ``"auto"`` (only when the profile is known: given or from
            the header, not estimated).
        maps: attach ``meta["maps"]["uncertainty"]`` — half the absolute difference of the
            sagittal and coronal estimates, on the output grid (input units): where the two
            orientations disagree, the new slices are uncertain. An image over time's is
            ``(T, Z, Y, X)``, each time point's own.
        patch_size, patches_per_epoch, batch_size, augment, lr, seed, device, progress, clip,
        on_progress: as for :func:`medsr.selfsup.zero_shot_upscale` (``on_progress``: the
            adaptation's fraction done).
        no_data: the volume's :func:`medsr.io.padding.no_data_mask` where the caller has it
            (:func:`medsr.io.padding.no_data_of`).

    Returns:
        The volume on the finer z grid, in the input's units, with ``meta["derivation"]``
        (prior, adaptation steps and seconds, slice profile and where it came from).
    """
    import time

    from medsr.degradations import thick_slice
    from medsr.inference.device import resolve_device
    from medsr.selfsup._fit import (
        build_network,
        check_budget,
        check_positive_int,
        check_steps,
        model_normalizer,
        run_tiled,
        train_on_pairs,
    )
    from medsr.selfsup.pyramid import no_data_target

    _check_volume(image, "through-plane super-resolution")
    target = _check_target(image, target_spacing)
    steps = check_steps(adapt_steps)
    budget, n_epochs = (None, None)
    if budget_s is not None or epochs is not None:
        budget, n_epochs = check_budget(budget_s, epochs)
    patch_size = check_positive_int(patch_size, "patch_size")
    batch_size = check_positive_int(batch_size, "batch_size")
    check_positive_int(patches_per_epoch, "patches_per_epoch")
    if isinstance(consistency, str):
        from medsr.safeguards.consistency import consistency_setting

        setting = consistency_setting(consistency)
    else:
        setting = "on" if consistency else "off"
    if not np.isfinite(image.array).all():
        raise InvalidParameterError("the volume contains NaN or infinite values")
    # no data (DICOM padding, a CT's fill outside the scan circle, a NIfTI's NaN): read as the
    # darkest measured value by everything below, never as signal; kept exact in the output
    work, no_data, _ = fill_no_data(image, no_data)
    slab = _slice_profile(work, slice_thickness, profile)
    thickness, shape = float(slab["thickness_mm"]), str(slab["profile"])
    dev = resolve_device(device)
    sz = slice_spacing(image)  # between the slices' planes: the profile spans it
    cf = work.channel_first()  # (C, Z, Y, X)
    c, z, h, w = cf.shape
    n_out = output_slices(image, target)
    f = network_factor(n_out / z)
    if min(h, w) < 4 * f:
        raise InvalidParameterError(
            f"the slices ({h}×{w}) are too small for a ×{f} through-plane model"
        )
    t_rel = thickness / sz  # profile width in slice spacings
    t0 = time.perf_counter()

    loaded = _resolve_prior(init if init is not None else prior, f)
    if loaded is not None:  # resolved for this call: its network is ours to adapt
        net, card, prior_label = loaded.net, loaded.card, loaded.name
        if int(getattr(net, "axis", -2)) != -2 or int(getattr(net, "scale", f)) != f:
            raise InvalidParameterError(
                f"the through-plane network must upsample rows (axis=-2) by ×{f}"
            )
    else:
        net, card, _ = build_network(
            model, f, model_kwargs, None, kind="interpolator-1d", seed=seed
        )
        prior_label = None
        if int(getattr(net, "axis", -2)) != -2:
            raise InvalidParameterError("the through-plane network must upsample rows (axis=-2)")
    norm = model_normalizer(card, work, cf, each_time_point=True)  # a time point as on its own
    vol = torch.from_numpy(np.ascontiguousarray(norm.forward(cf), dtype=np.float32))  # (C, Z, Y, X)

    report = None
    if steps > 0 or budget is not None or n_epochs is not None:
        # adaptation pairs: axial slices with y (rows), or x (after a transpose), made thick
        # with the volume's profile at the network's factor (width in the network's thin slices)
        # (no data: read as the fill by the input, no target: the loss leaves it out)
        axial = vol.reshape(c * z, 1, h, w)
        held = None if no_data is None else torch.from_numpy(no_data.reshape(c * z, 1, h, w))
        pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
        with torch.no_grad():
            for k, planes in enumerate((axial, axial.transpose(-2, -1).contiguous())):
                low = thick_slice(planes, f, profile=shape, thickness=t_rel * f, axis=-2)
                high = planes[..., : low.shape[-2] * f, :]
                if held is not None:
                    high = no_data_target(high, held if k == 0 else held.transpose(-2, -1))
                pairs.extend(zip(low, high, strict=True))
        report = train_on_pairs(
            net,
            pairs,
            (f, 1),
            patch_size=patch_size,
            patches_per_epoch=patches_per_epoch,
            augment=augment,
            seed=seed,
            budget_s=budget,
            epochs=n_epochs,
            batch_size=batch_size,
            lr=lr if lr is not None else (1e-4 if prior_label else 1e-3),
            device=dev,
            progress=progress,
            description=f"through-plane ×{f} adaptation",
            init=prior_label,
            max_steps=steps if steps > 0 else None,
            on_progress=on_progress,
        )

    # apply to sagittal (z, y) and coronal (z, x) planes, z = rows; fuse by averaging
    v = vol.numpy()
    sag = v.transpose(0, 3, 1, 2).reshape(c * w, 1, z, h)
    up_sag = run_tiled(net, sag, (f, 1), dev).reshape(c, w, z * f, h).transpose(0, 2, 3, 1)
    cor = v.transpose(0, 2, 1, 3).reshape(c * h, 1, z, w)
    up_cor = run_tiled(net, cor, (f, 1), dev).reshape(c, h, z * f, w).transpose(0, 2, 1, 3)
    fused = torch.from_numpy(np.ascontiguousarray(0.5 * (up_sag + up_cor), dtype=np.float32))
    spread = None
    if maps:
        spread = torch.from_numpy(
            np.ascontiguousarray(0.5 * np.abs(up_sag - up_cor), dtype=np.float32)
        )
    del up_sag, up_cor
    out = norm.inverse(_resize_z(fused, n_out, "cubic").numpy())
    # the input's range (no data reads as the darkest measured value: inside it); an image over
    # time: each time point's own, as when it is read on its own (the series' range left a
    # pre-contrast phase's overshoot unclipped up to the post-contrast phases' maximum)
    each = image.channels == "time"
    lo: Any = cf.min(axis=(1, 2, 3), keepdims=True) if each else float(cf.min())
    hi: Any = cf.max(axis=(1, 2, 3), keepdims=True) if each else float(cf.max())
    if clip:  # the network's overshoot first: the projection then has less for the clip to undo
        np.clip(out, lo, hi, out=out)
    projection: dict[str, Any] = {"setting": setting, "applied": False}
    if setting == "on" or (setting == "auto" and slab["source"] in ("given", "header")):
        projected, info = _project_thick_slice(
            torch.from_numpy(np.ascontiguousarray(out, np.float32)),
            torch.from_numpy(np.ascontiguousarray(cf, np.float32)), shape, t_rel,
        )  # fmt: skip
        out = projected.numpy()
        projection.update(info, setting=setting, applied=True)
        if clip:
            np.clip(out, lo, hi, out=out)
    kept = None
    if no_data is not None:  # exact, as measured
        mask = no_data if image.channels else no_data[None]
        kept = keep_no_data(out, image.channel_first(), mask, axis=1)
    arr = out if image.channels else out[0]
    seconds = time.perf_counter() - t0
    if prior_label and report is None:
        name = f"{prior_label} (through-plane prior)"
        method = "learned prior"
    elif prior_label:
        name = f"{prior_label} (through-plane prior, adapted to this volume: {report.steps} steps)"  # type: ignore[union-attr]
        method = "learned prior + per-volume adaptation"
    else:
        arch = card["architecture"] if card else model
        name = f"{arch} (zero-shot through-plane, {report.steps if report else 0} steps)"
        method = METHOD
    sr = on_grid(image, arr, step=f"through-plane upscale {z} -> {n_out} slices ({name})")
    sr = carry_nonfinite(image, sr, axis=0)  # the input's NaN where no data was kept above
    meta = dict(sr.meta)
    profile_info = {
        "slice_thickness_mm": round(thickness, 4),
        "profile": shape,
        "source": slab["source"],
    }
    meta["derivation"] = {
        "method": method,
        "model": name,
        "model_checksum": loaded.checksum if loaded is not None else None,
        "scale": round(n_out / z, 4),
        "network_factor": f,
        "axes": "through-plane (z)",
        "model_version": None,
        "slice_profile": profile_info,
        "seconds": round(seconds, 2),
        "training": None
        if report is None
        else {**report.as_dict(), "factor": f, **profile_info, "seed": seed},
        "consistency": projection,
    }
    if spread is not None:
        u = (_resize_z(spread, n_out, "linear").numpy() * norm.scale).astype(np.float32)
        if kept is not None:
            u[kept] = 0.0  # nothing was estimated there
        # a colour image's: one (Z, Y, X) map, the mean over the channels that hold data at
        # each voxel; an image over time's: (T, Z, Y, X), each time point's own (the spread of
        # that time point run on its own)
        meta["maps"] = {
            "uncertainty": u if each else (mean_over_held(u, kept) if image.channels else u[0])
        }
    return sr.replace(meta=meta)
