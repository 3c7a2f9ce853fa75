"""Through-plane self-supervised super-resolution of thick-slice volumes (SMORE-like).

A volume acquired as thick slices (z spacing coarser than the in-plane pixel size) is sharp
in-plane and blurred + under-sampled along z. SMORE — C. Zhao et al., "SMORE: a self-supervised
anti-aliasing and super-resolution algorithm for MRI using deep learning", IEEE TMI
40(3):805–817, 2021 — observes that the in-plane data show what the anatomy looks like at high
resolution, so training pairs can be made from the axial slices themselves:

1. each axial slice is degraded along one in-plane axis (y, and x after a transpose) with the
   through-plane model: the slice profile (Gaussian, FWHM = slice thickness — from the header
   when known, else the slice spacing — in in-plane pixels) and decimation by
   ``f = round(z spacing / in-plane spacing)`` (:func:`medsr.degradations.thick_slice`);
2. a one-axis network (``residual5-1d``: cubic interpolation along the axis + a residual CNN) is
   trained to undo that, on random patches (flips as augmentation), within a time budget;
3. it is applied to every sagittal ``(z, y)`` and coronal ``(z, x)`` plane with z as the upsampled
   axis, the two orientations are averaged, and the volume (now ``f × Z`` slices) is resampled
   along z (cubic) to the isotropic or requested spacing.

The output grid is medsr's one grid rule for through-plane outputs (:mod:`medsr.slice_grid`,
shared with ``medsr interpolate``): cell-centred, same field of view, ``n = round(Z·s_z / target)``
slices of spacing ``Z·s_z / n`` — the target exactly when that is a whole number.
:func:`interpolate_z` gives the linear/cubic interpolation baselines on the same grid.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import torch

from medsr.errors import InvalidParameterError, positive_number
from medsr.image import MedImage
from medsr.slice_grid import check_target_spacing, on_grid, output_slices, resize_axis

__all__ = ["interpolate_z", "output_slices", "slice_thickness_mm", "through_plane_upscale"]

METHOD = "zero-shot self-supervised"


def slice_thickness_mm(image: MedImage) -> float | None:
    """Slice thickness of ``image`` in mm when its header says it, else ``None``.

    Looks at ``meta["slice_thickness_mm"]`` and DICOM ``SliceThickness`` (also in the shared
    functional groups of an enhanced multi-frame object). A DICOM thickness is scaled like the
    slice spacing when the image has been resampled along z since it was read (the DICOM
    writer's convention).
    """
    meta = image.meta or {}
    value = meta.get("slice_thickness_mm")
    if value is None and meta.get("format") == "dicom" and meta.get("datasets"):
        ds = meta["datasets"][0]
        value = ds.get("SliceThickness")
        if value is None:
            try:
                value = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].SliceThickness
            except (AttributeError, IndexError, KeyError):
                value = None
        src = meta.get("source_spacing")
        try:
            value = float(value) if value is not None else None
        except (TypeError, ValueError):
            value = None
        if value is not None and src:
            value *= image.spacing[0] / float(src[0])
    try:
        v = float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
    return v if v is not None and math.isfinite(v) and v > 0 else None


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
    return image


def _check_target(image: MedImage, target_spacing: Any) -> float:
    return check_target_spacing(image, target_spacing, axis=0)


def _project_thick_slice(
    fused: torch.Tensor, vol: torch.Tensor, f: int, profile: str, thickness: float
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Data consistency along z: make ``thick_slice(fused)`` reproduce the measured slices.

    ``fused`` (C, f·Z, Y, X) and ``vol`` (C, Z, Y, X) are in model units; ``thickness`` is the
    slice profile width in thin slices. 1-D iterative back-projection along z only
    (:class:`medsr.safeguards.operators.Measurement` ``thick-slice``); exact before the final
    resampling to the requested slice count (identical when ``n_out == f·Z``).
    """
    from medsr.safeguards.operators import resolve_measurement

    meas = resolve_measurement("thick-slice", f, profile=profile, thickness=thickness, axis=-2)
    x = fused.permute(0, 3, 1, 2).contiguous()  # (C, X, f·Z, Y): z is axis -2
    y = vol.permute(0, 3, 1, 2).contiguous()
    projected, info = meas.project(x, y)
    info = {k: v for k, v in info.items() if k != "history"}
    return projected.permute(0, 2, 3, 1).contiguous(), {
        "setting": "on",
        "method": "thick-slice back-projection",
        **info,
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
) -> MedImage:
    """Resample a volume along z only (linear or cubic), same field of view.

    Args:
        image: a volume.
        target_spacing: slice spacing to aim for (mm; default the finer in-plane spacing, i.e.
            isotropic); the volume gets ``round(Z·s_z / target)`` slices.
        mode: ``linear``, ``cubic`` (Keys, a = −0.75) or ``nearest``.
        n_slices: exact number of output slices instead of ``target_spacing``.
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
    cf = torch.from_numpy(np.ascontiguousarray(image.channel_first()))
    out = _resize_z(cf, n, mode).numpy()
    arr = out if image.channels else out[0]
    sr = on_grid(image, arr, step=f"through-plane {mode} interpolation to {n} slices")
    meta = dict(sr.meta)
    meta["derivation"] = {
        "method": "interpolation",
        "model": f"{mode}-z",
        "scale": round(n / image.spatial_shape[0], 4),
        "axes": "through-plane (z)",
        "model_version": None,
    }
    return sr.replace(meta=meta)


def through_plane_upscale(
    image: MedImage,
    *,
    target_spacing: float | None = None,
    slice_thickness: float | None = None,
    profile: str = "gaussian",
    budget_s: float | None = 60.0,
    epochs: int | None = None,
    patch_size: int = 64,
    patches_per_epoch: int = 10_000,
    batch_size: int = 4,
    augment: bool = True,
    init: str | os.PathLike[str] | None = None,
    model: str = "residual5-1d",
    model_kwargs: dict[str, Any] | None = None,
    lr: float | None = None,
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
    clip: bool = True,
    consistency: bool = False,
) -> MedImage:
    """Super-resolve a thick-slice volume along z with a network trained on its own slices.

    Args:
        image: a volume whose slice spacing is coarser than ``target_spacing``.
        target_spacing: output slice spacing in mm (default: the finer in-plane spacing, i.e.
            isotropic voxels). The field of view is kept, so the spacing is exactly the target
            when ``Z · s_z / target`` is a whole number and the nearest such value otherwise.
        slice_thickness: through-plane slice-profile width in mm (default: the header's
            SliceThickness when known, else the slice spacing).
        profile: slice profile, ``gaussian`` (FWHM = thickness, MR excitation) or ``box``
            (full width = thickness, CT detector binning).
        budget_s, epochs, patch_size, patches_per_epoch, batch_size, augment, lr, seed, device,
        progress, clip: as for :func:`medsr.selfsup.zero_shot_upscale` (augmentation here is
            flips only: the degraded axis must stay the upsampled one).
        init: ``None``, ``"default"`` or a ``.safetensors`` file of a ``residual5-1d`` model for
            the same factor to fine-tune from.
        model, model_kwargs: the one-axis architecture (``residual5-1d``) and its arguments.

    Returns:
        The volume on the finer z grid, in the input's units, with ``meta["derivation"]``.
    """
    from medsr.degradations import thick_slice
    from medsr.inference.predictor import resolve_device
    from medsr.selfsup._fit import (
        build_network,
        check_budget,
        check_positive_int,
        model_normalizer,
        run_tiled,
        train_on_pairs,
    )

    _check_volume(image, "through-plane super-resolution")
    target = _check_target(image, target_spacing)
    budget, n_epochs = check_budget(budget_s, epochs)
    patch_size = check_positive_int(patch_size, "patch_size")
    batch_size = check_positive_int(batch_size, "batch_size")
    check_positive_int(patches_per_epoch, "patches_per_epoch")
    if profile not in ("gaussian", "box"):
        raise InvalidParameterError(f"slice profile must be gaussian or box, got {profile!r}")
    dev = resolve_device(device)
    sz, sy, sx = image.spacing
    if slice_thickness is None:
        thickness = slice_thickness_mm(image) or sz
    else:
        thickness = positive_number(slice_thickness, "slice thickness", "mm")
    f = max(1, round(sz / min(sy, sx)))
    cf = image.channel_first()  # (C, Z, Y, X)
    c, z, h, w = cf.shape
    if not np.isfinite(cf).all():
        raise InvalidParameterError("the volume contains NaN or infinite values")
    if min(h, w) < 4 * f:
        raise InvalidParameterError(
            f"the slices ({h}×{w}) are too small to learn a ×{f} through-plane model from them"
        )
    n_out = output_slices(image, target)

    net, card, init_name = build_network(
        model, f, model_kwargs, init, kind="interpolator-1d", seed=seed
    )
    if int(getattr(net, "axis", -2)) != -2:
        raise InvalidParameterError("the through-plane network must upsample rows (axis=-2)")
    norm = model_normalizer(card, image, cf)
    vol = torch.from_numpy(norm.forward(cf))  # (C, Z, Y, X)

    # training pairs: axial slices with y (rows), or x (after a transpose), made thick
    axial = vol.reshape(c * z, 1, h, w)
    pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
    with torch.no_grad():
        for planes, pixel in ((axial, sy), (axial.transpose(-2, -1).contiguous(), sx)):
            lo = thick_slice(planes, f, profile=profile, thickness=thickness / pixel, axis=-2)
            hi = planes[..., : lo.shape[-2] * f, :]
            pairs.extend(zip(lo, hi, strict=True))
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
        lr=lr,
        device=dev,
        progress=progress,
        description=f"through-plane ×{f}",
        init=init_name,
    )

    # apply to sagittal (z, y) and coronal (z, x) planes, z = rows; fuse by averaging
    v = vol.numpy()
    sag = v.transpose(0, 3, 1, 2).reshape(c * w, 1, z, h)
    up_sag = run_tiled(net, sag, (f, 1), dev).reshape(c, w, z * f, h).transpose(0, 2, 3, 1)
    cor = v.transpose(0, 2, 1, 3).reshape(c * h, 1, z, w)
    up_cor = run_tiled(net, cor, (f, 1), dev).reshape(c, h, z * f, w).transpose(0, 2, 1, 3)
    fused = torch.from_numpy(np.ascontiguousarray(0.5 * (up_sag + up_cor), dtype=np.float32))
    projection = None
    if consistency:
        fused, projection = _project_thick_slice(fused, vol, f, profile, thickness / (sz / f))
    fused = _resize_z(fused, n_out, "cubic")
    out = norm.inverse(fused.numpy())
    if clip:
        np.clip(out, float(cf.min()), float(cf.max()), out=out)
    arr = out if image.channels else out[0]
    arch = card["architecture"] if card else model
    name = (
        f"{arch} (zero-shot through-plane{', fine-tuned from ' + init_name if init_name else ''})"
    )
    sr = on_grid(
        image,
        arr,
        step=f"through-plane upscale {z} -> {n_out} slices ({name}, {report.steps} steps)",
    )
    meta = dict(sr.meta)
    meta["derivation"] = {
        "method": METHOD,
        "model": name,
        "scale": round(n_out / z, 4),
        "axes": "through-plane (z)",
        "model_version": None,
        "training": {
            **report.as_dict(),
            "factor": f,
            "slice_thickness_mm": round(thickness, 4),
            "profile": profile,
            "seed": seed,
        },
        "consistency": projection if projection is not None else "off",
    }
    return sr.replace(meta=meta)
