"""Apply an upscaler to a MedImage: slice-wise, in-plane, geometry and units preserved.

``upscale(image, scale, model)`` resolves the model (a registered name or a ``.safetensors``
file with its model card), runs it on every ``(Y, X)`` plane in small batches, and returns a
MedImage on the finer grid: spacing divided by the factor, field of view unchanged, values in the
input's units, and ``meta["derivation"]`` describing what was done (the DICOM writer turns it
into DerivationDescription).
"""

from __future__ import annotations

import os
from typing import Any

from medsr.image import MedImage, require_image
from medsr.inference.device import resolve_device
from medsr.models.resolver import SCALES

__all__ = ["SCALES", "load_upscaler", "resolve_device", "upscale"]


def load_upscaler(
    model: str | os.PathLike[str], scale: int, in_channels: int = 1
) -> tuple[Any, dict[str, Any]]:
    """A ready-to-run in-plane module and its model card (through :func:`medsr.models.resolver.resolve_model`)."""
    from medsr.models.resolver import resolve_model

    loaded = resolve_model(
        model, scale=scale, kinds=("in-plane", "classical"), in_channels=in_channels
    )
    return loaded.net, loaded.card


def upscale(
    image: MedImage,
    scale: int = 2,
    model: str | os.PathLike[str] | None = None,
    *,
    device: str = "auto",
    batch_size: int | None = None,
    clip: bool = True,
    tile: int | None = 512,
    precision: str | None = None,
    ensemble: bool = False,
) -> MedImage:
    """Super-resolve every plane of ``image`` by ``scale`` in-plane.

    Args:
        image: any MedImage; volumes are processed slice by slice, colour and 4-D series
            channel by channel (single-channel models).
        scale: integer factor, 2, 3 or 4.
        model: a shipped model (``default-x2``...), a registered name (``medsr.list_models()``)
            or a ``.safetensors`` weights file; ``None`` → ``default-x{scale}`` when shipped,
            otherwise bicubic.
        device: ``auto``, ``cpu`` or ``cuda``.
        batch_size: planes per forward pass (``None``: 1 on CPU, the fastest there; 8 on GPU).
        clip: keep output values inside the input's intensity range (removes interpolation
            overshoot, so 12-bit stays 12-bit and no value appears that the input lacked).
        tile: planes larger than ``tile``² pixels are processed in overlapping tiles (bounded
            memory; same result as whole-plane inference, see :mod:`medsr.inference.tiling`);
            ``None`` never tiles.
        precision: ``fp32`` (``None``: the default, or a shared PlaneUpscaler's), ``bf16``
            for the learned residual (about 2× faster on CPUs with AVX-512 BF16/AMX and on GPUs;
            ``benchmarks/results/precision.md``; the model's measured recipe), ``fp16`` (CUDA
            only) or ``auto`` (fp16 on a CUDA GPU, else bf16 where it is native, for a model
            measured within the tolerance: :mod:`medsr.inference.precision`);
            recorded in ``meta["derivation"]``.
        ensemble: learned models: the mean of the model's outputs for the 8 flips and 90°
            rotations of the input, each turned back (the *self-ensemble*,
            :mod:`medsr.inference.ensemble`): 8× the time, usually a little closer to the truth
            (``benchmarks/results/faithful_ensemble.md``); recorded in ``meta["derivation"]``
            and the processing steps. Interpolators commute with the transforms already: one
            pass.
    """
    from medsr.inference.ensemble import DIHEDRAL, ensemble_mean
    from medsr.inference.planes import PlaneUpscaler

    require_image(image, "medsr.upscale", pixels=True)
    runner = PlaneUpscaler(
        model,
        scale,
        device=device,
        batch_size=batch_size,
        clip=clip,
        tile=tile,
        precision=precision,
    )
    if ensemble and runner.loaded.learned:
        return ensemble_mean(image, runner.upscale, DIHEDRAL)
    return runner.upscale(image)
