"""In-plane zero-shot super-resolution: learn LR → HR from the image's own LR → very-LR copy.

ZSSR (Shocher, Cohen and Irani, "'Zero-Shot' Super-Resolution using Deep Internal Learning",
CVPR 2018): the input is degraded once more with the assumed acquisition model (see
:func:`medsr.selfsup.pyramid.build_pyramid`), a small residual CNN (``residual5`` by default) is
trained on random patches to undo that degradation, and the trained network is applied to the
input itself. No training set is needed; the price is a per-image training time (``budget_s``).

A volume gets one network trained on patches of many of its slices, then applied slice by slice;
colour channels (or time frames) are treated as more grayscale planes of the same network. An image
over time (``channels="time"``) is normalised and clipped one time point at a time, each as it is
on its own, but its network is trained once on all time points' planes (the same anatomy: one
training per time point would take T times the budget); so a time point's output is not that
time point run on its own.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from medsr.durations import ZERO_SHOT_BUDGET_S
from medsr.errors import InvalidParameterError
from medsr.image import MedImage
from medsr.io.padding import carry_nonfinite, fill_blocks, fill_no_data

__all__ = ["zero_shot_upscale"]

METHOD = "zero-shot self-supervised"


def zero_shot_upscale(
    image: MedImage,
    scale: int = 2,
    *,
    budget_s: float | None = ZERO_SHOT_BUDGET_S,
    epochs: int | None = None,
    patch_size: int = 64,
    patches_per_epoch: int = 10_000,
    batch_size: int = 4,
    augment: bool = True,
    init: str | os.PathLike[str] | None = None,
    model: str = "residual5",
    model_kwargs: dict[str, Any] | None = None,
    degradation: str = "bicubic",
    blur_sigma: float | None = None,
    degradation_params: dict[str, Any] | None = None,
    lr: float | None = None,
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
    clip: bool = True,
    on_progress: Callable[[float], None] | None = None,
) -> MedImage:
    """Super-resolve ``image`` in-plane by ``scale`` with a network trained on the image itself.

    Args:
        image: any MedImage (2-D, volume, colour or 4-D series; channels and slices are all
            planes of one network).
        scale: 2, 3 or 4.
        budget_s: training time limit in seconds (``None``: only ``epochs`` limits it;
            default :data:`medsr.durations.ZERO_SHOT_BUDGET_S`, as on every front end). The
            application to the whole image comes on top.
        epochs: number of epochs of ``patches_per_epoch`` patches (``None``: until the budget).
            Training stops at whichever limit comes first.
        patch_size: side of the square training patches in input pixels (64; smaller images use
            their own size).
        patches_per_epoch: patches per epoch (10,000).
        batch_size: patches per optimiser step.
        augment: flips and 90° rotations of the training patches.
        init: ``None`` (learn from scratch), ``"default"`` (the shipped ``{model}-x{scale}``
            weights) or a ``.safetensors`` file to fine-tune from (its model card decides the
            architecture and the intensity normalisation).
        model: registered architecture trained from scratch (``residual5``; ``vdsr`` works too).
        model_kwargs: its constructor arguments (``residual5`` defaults to
            ``{"num_features": 32}`` here: twice the optimiser steps of the zoo's 64 per budget).
        degradation: the acquisition model used to make the very-LR copy (``bicubic``: Gaussian
            blur + antialiased bicubic; or any in-plane degradation name).
        blur_sigma: σ of the bicubic pre-blur (default √(f² − 1)/2 px; 0 for plain bicubic).
        degradation_params: parameters of a non-bicubic ``degradation``.
        lr: Adam learning rate (1e-3 from scratch, 2e-4 when fine-tuning).
        seed: seeds the initial weights and the patch order. With ``budget_s=None`` and
            ``epochs`` set the result is reproducible; a time budget makes the number of
            steps depend on the machine's speed.
        device: ``auto``, ``cpu`` or ``cuda``.
        progress: show a progress bar on stderr.
        on_progress: called with the training's fraction done (0 to 1) before every
            optimiser step (the web service's job progress); an exception it raises stops it.
        clip: keep output values inside the input's intensity range.

    Returns:
        A MedImage on the ×``scale`` finer grid (same field of view, see
        :meth:`MedImage.resampled`) in the input's units, with ``meta["derivation"]`` saying how
        it was made (``method = "zero-shot self-supervised"``) and what the training did.
    """
    from medsr.inference.device import resolve_device
    from medsr.models.resolver import check_scale
    from medsr.selfsup._fit import (
        build_network,
        check_budget,
        check_positive_int,
        model_normalizer,
        run_tiled,
        train_on_pairs,
    )
    from medsr.selfsup.pyramid import build_pyramid, no_data_target

    if not isinstance(image, MedImage):
        raise InvalidParameterError(
            f"zero_shot_upscale needs a MedImage, got {type(image).__name__}"
        )
    scale = check_scale(scale)
    budget, n_epochs = check_budget(budget_s, epochs)
    patch_size = check_positive_int(patch_size, "patch_size")
    batch_size = check_positive_int(batch_size, "batch_size")
    check_positive_int(patches_per_epoch, "patches_per_epoch")
    dev = resolve_device(device)

    # no data (DICOM padding, a CT's fill outside the scan circle, NaN as the readers record
    # it): read as the darkest measured value by the network's input when training and
    # upscaling, never a training target (the loss leaves it out); kept exact in the output
    # (NaN stays NaN), as in-plane
    work, no_data, _ = fill_no_data(image)
    cf = work.channel_first()  # (C, Z, Y, X)
    c, z, h, w = cf.shape
    if min(h, w) // scale < 4:
        raise InvalidParameterError(
            f"the image ({h}×{w}) is too small for ×{scale} zero-shot super-resolution "
            f"(its ×{scale} smaller copy must be at least 4 pixels wide)"
        )
    net, card, init_name = build_network(
        model, scale, model_kwargs, init, kind="upscaler", seed=seed
    )
    # an image over time: each time point normalised (and below clipped) as it is on its own;
    # the network is still trained once on all time points' planes (one anatomy)
    norm = model_normalizer(card, work, cf, each_time_point=True).per_plane(z)
    planes = norm.forward(cf.reshape(c * z, 1, h, w))
    x = torch.from_numpy(planes)
    very_lr, lr_img = build_pyramid(
        x,
        scale,
        degradation=degradation,
        blur_sigma=blur_sigma,
        params=degradation_params,
        seed=seed,
    )
    if no_data is not None:  # no target where the image holds no data: never learnt as output
        lr_img = no_data_target(lr_img, no_data.reshape(c * z, 1, h, w))
    report = train_on_pairs(
        net,
        list(zip(very_lr, lr_img, strict=True)),
        scale,
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
        description=f"zero-shot ×{scale}",
        init=init_name,
        on_progress=on_progress,
    )
    out = norm.inverse(run_tiled(net, planes, (scale, scale), dev))
    if clip:  # the input's range (no data reads as the darkest measured value: inside it)
        if image.channels == "time":  # each time point's own, one per plane
            lo = np.repeat(cf.min(axis=(1, 2, 3)), z).reshape(-1, 1, 1, 1)
            hi = np.repeat(cf.max(axis=(1, 2, 3)), z).reshape(-1, 1, 1, 1)
            np.clip(out, lo, hi, out=out)
        else:
            np.clip(out, float(cf.min()), float(cf.max()), out=out)
    result = out.reshape(c, z, h * scale, w * scale)
    arr = result if image.channels else result[0]
    if no_data is not None:  # each no-data pixel's block keeps its exact value (as in-plane)
        t = torch.from_numpy(np.ascontiguousarray(arr))
        values = torch.from_numpy(np.ascontiguousarray(image.array, np.float32))
        arr = fill_blocks(t, torch.from_numpy(no_data), values, scale, out=t).numpy()
    arch = card["architecture"] if card else model
    name = f"{arch} (zero-shot{', fine-tuned from ' + init_name if init_name else ''})"
    sr = image.resampled(arr, step=f"in-plane upscale x{scale} ({name}, {report.steps} steps)")
    sr = carry_nonfinite(image, sr, scale=scale)  # the input's NaN: each pixel's block
    meta = dict(sr.meta)
    meta["derivation"] = {
        "method": METHOD,
        "model": name,
        "scale": scale,
        "axes": "in-plane",
        "model_version": None,
        "training": {
            **report.as_dict(),
            "degradation": degradation,
            "seed": seed,
        },
    }
    return sr.replace(meta=meta)
