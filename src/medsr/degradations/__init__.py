"""Physics-based degradation models: how a lower-resolution image of each modality comes about.

One physics model per module, each a deterministic function of explicit parameters on batched
torch tensors — ``(N, C, H, W)`` float32, or ``(N, C, D, H, W)`` where z matters — plus a
``Random…`` wrapper that samples those parameters (``wrapper(x, generator=None)``):

===================  ===========================================  ============================
registry name        deterministic function                       wrapper
===================  ===========================================  ============================
``bicubic``          :func:`bicubic_downscale`                    :class:`RandomBicubic`
``kspace``           :func:`kspace_truncate`                      :class:`RandomKSpace`
``ct-sparse-view``   :func:`ct_sparse_view`                       :class:`RandomCTSparseView`
``ct-detector``      :func:`ct_detector_blur`                     :class:`RandomCTDetector`
``ultrasound``       :func:`ultrasound_lateral`                   :class:`RandomUltrasound`
``thick-slice``      :func:`thick_slice`                          :class:`RandomThickSlice`
``radiograph``       :func:`radiograph`                           :class:`RandomRadiograph`
``gaussian-noise``   :func:`gaussian_noise`                       :class:`RandomGaussianNoise`
``rician-noise``     :func:`rician_noise`                         :class:`RandomRicianNoise`
``poisson-noise``    :func:`poisson_noise`                        :class:`RandomPoissonNoise`
``compose``          —                                            :class:`Compose`
``default``          —                                            :func:`default_degradation`
===================  ===========================================  ============================

Every reducing model maps an HR axis of length ``n`` to ``⌊n/f⌋`` samples (trailing samples
dropped first) centred on HR index ``f·j + (f − 1)/2`` — the cell-centred grid of
:meth:`medsr.image.MedImage.resampled` — so :func:`degrade_image` reports exact geometry.
Parameters are python values; parsing strings is the CLI's job.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import torch

from medsr.degradations._common import (
    RandomDegradation,
    as_generator,
    check_scale,
    check_seed,
    offset_seed,
)
from medsr.degradations._registry import (
    get_degradation,
    get_factory,
    list_degradations,
    register_degradation,
)
from medsr.degradations.bicubic import (
    RandomBicubic,
    bicubic_downscale,
    downscale_pyramid,
    pyramid_blur_sigma,
)
from medsr.degradations.compose import Compose, OneOf, default_degradation, modality_group
from medsr.degradations.ct_sparse_view import (
    RandomCTDetector,
    RandomCTSparseView,
    ct_detector_blur,
    ct_sparse_view,
    fbp,
    hu_to_mu,
    mu_to_hu,
    radon,
)
from medsr.degradations.kspace import (
    RandomKSpace,
    centered_fft2,
    centered_ifft2,
    kspace_truncate,
    kspace_upsample,
)
from medsr.degradations.noise import (
    RandomGaussianNoise,
    RandomPoissonNoise,
    RandomRicianNoise,
    gaussian_noise,
    poisson_noise,
    rician_noise,
)
from medsr.degradations.radiograph import RandomRadiograph, radiograph
from medsr.degradations.thick_slice import RandomThickSlice, thick_slice
from medsr.degradations.ultrasound import RandomUltrasound, ultrasound_lateral
from medsr.errors import InvalidParameterError
from medsr.image import MedImage
from medsr.modality import default_kind

__all__ = [
    "Compose",
    "OneOf",
    "RandomBicubic",
    "RandomCTDetector",
    "RandomCTSparseView",
    "RandomDegradation",
    "RandomGaussianNoise",
    "RandomKSpace",
    "RandomPoissonNoise",
    "RandomRadiograph",
    "RandomRicianNoise",
    "RandomThickSlice",
    "RandomUltrasound",
    "bicubic_downscale",
    "centered_fft2",
    "centered_ifft2",
    "check_seed",
    "ct_detector_blur",
    "ct_sparse_view",
    "default_degradation",
    "default_kind",
    "degrade_image",
    "downscale_pyramid",
    "fbp",
    "gaussian_noise",
    "get_degradation",
    "hu_to_mu",
    "kspace_truncate",
    "kspace_upsample",
    "list_degradations",
    "modality_group",
    "mu_to_hu",
    "offset_seed",
    "poisson_noise",
    "pyramid_blur_sigma",
    "radiograph",
    "radon",
    "register_degradation",
    "rician_noise",
    "thick_slice",
    "ultrasound_lateral",
]


def _describe(params: dict[str, Any]) -> str:
    items = []
    for k, v in sorted(params.items()):
        if k == "transforms":
            v = f"[{len(v)} steps]"
        items.append(f"{k}={v}")
    return f" ({', '.join(items)})" if items else ""


def degrade_image(
    image: MedImage,
    kind: str,
    scale: int,
    *,
    generator: torch.Generator | int | None = None,
    **params: Any,
) -> MedImage:
    """Degrade a :class:`~medsr.image.MedImage` with a registered model; geometry follows.

    In-plane models run slice by slice (the Z slices form the batch, colour channels the
    channel axis, so colour is processed per channel); ``thick-slice`` runs on the whole
    volume along z (or slice-wise on an in-plane axis when ``axis=-1``/``-2`` is given).
    ``default`` uses :func:`default_degradation` for ``image.modality``; ``compose`` takes
    ``transforms=[...]``. Fixed parameters are passed as python values; noise is drawn from
    ``generator`` (a torch.Generator or an integer seed; ``None`` uses torch's global RNG).

    Models with a physical pixel size (``ct-sparse-view``'s ``pixel_size_mm``) take it from
    the image's in-plane spacing unless given.

    Axes that shrink are first cropped (trailing samples) to a multiple of ``scale`` and the
    result is returned with :meth:`MedImage.resampled`, so the spacing of a reduced axis is
    multiplied by ``scale`` and the field of view of the kept samples is unchanged.

    Args:
        image: the HR image (intensities in its own units: HU for ``ct-sparse-view``).
        kind: a name from :func:`list_degradations`.
        scale: integer factor.
        generator: noise source.
        **params: the model's parameters (see its function).
    """
    if not isinstance(image, MedImage):
        raise InvalidParameterError(f"degrade_image needs a MedImage, got {type(image).__name__}")
    f = check_scale(scale)
    name = str(kind).strip().lower()
    factory = get_factory(name)
    g = as_generator(generator)
    volumetric = False
    if name == "default":
        if params:
            raise InvalidParameterError(
                f"the default degradation takes no parameters, got {sorted(params)}"
            )
        pipeline = default_degradation(image.modality, f)

        def op(t: torch.Tensor) -> torch.Tensor:
            return pipeline(t, generator=g)

    elif name == "compose":
        pipeline = get_degradation("compose", **params)

        def op(t: torch.Tensor) -> torch.Tensor:
            return pipeline(t, generator=g)

    elif isinstance(factory, type) and issubclass(factory, RandomDegradation):
        fn = factory.function
        extra = {"generator": g} if factory.uses_generator else {}
        if factory.pixel_size_param and factory.pixel_size_param not in params:
            # physical pixel size from the image (geometric mean of the in-plane spacing)
            params[factory.pixel_size_param] = float(np.sqrt(image.spacing[1] * image.spacing[2]))
        try:
            inspect.signature(fn).bind(None, f, **params, **extra)
        except TypeError as exc:
            raise InvalidParameterError(f"bad parameters for degradation {kind!r}: {exc}") from None
        volumetric = factory.volumetric and params.get("axis") in (None, -3, 2)

        def op(t: torch.Tensor) -> torch.Tensor:
            return fn(t, f, **params, **extra)

    else:  # a third-party registration: build it and call it
        built = get_degradation(name, **params)

        def op(t: torch.Tensor) -> torch.Tensor:
            return built(t, generator=g)

    # no data (DICOM padding, a CT's fill outside the scan circle, NaN) is not what a scanner
    # measures: the field is degraded with the darkest measured value there, and the no data is
    # made again at the new resolution as a scanner makes it (below)
    from medsr.io.padding import fill_no_data

    source = image
    image, no_data, _ = fill_no_data(image) if not image.channels else (image, None, 0.0)
    arr = image.channel_first()  # (C, Z, Y, X)
    with torch.no_grad():
        if volumetric:
            out = op(torch.from_numpy(np.ascontiguousarray(arr))[None])[0]
        else:
            t = torch.from_numpy(np.ascontiguousarray(arr)).permute(1, 0, 2, 3)
            out = op(t).permute(1, 0, 2, 3)
    out_arr = out.detach().cpu().numpy().astype(np.float32, copy=False)
    if out_arr.ndim != 4 or out_arr.shape[0] != arr.shape[0]:
        raise InvalidParameterError(
            f"degradation {kind!r} returned shape {tuple(out.shape)} for input {arr.shape}"
        )

    crop, reduced = [], False
    for n_in, n_out in zip(arr.shape[1:], out_arr.shape[1:], strict=True):
        if n_out == n_in:
            crop.append(n_in)
        elif n_out * f <= n_in < (n_out + 1) * f:
            crop.append(n_out * f)
            reduced = True
        else:
            raise InvalidParameterError(
                f"degradation {kind!r} changed an axis from {n_in} to {n_out} samples, "
                f"which is not a reduction by the factor {f}"
            )
    cz, cy, cx = crop
    base = image
    if (cz, cy, cx) != tuple(arr.shape[1:]):
        base = image.replace(array=image.array[..., :cz, :cy, :cx])
    if not image.channels:
        out_arr = out_arr[0]
    lr_no_data = None
    if no_data is not None:
        lr_no_data = _no_data_at(no_data[:cz, :cy, :cx], source.array[:cz, :cy, :cx], out_arr)
        base = base.replace(meta={k: v for k, v in base.meta.items() if k != "nonfinite_mask"})
    # the seed of a noise-drawing model is part of what it did: the same seed, the same image
    draws = not (isinstance(factory, type) and issubclass(factory, RandomDegradation)) or (
        factory.uses_generator
    )
    seed = {}
    if draws and isinstance(generator, int | np.integer) and not isinstance(generator, bool):
        seed = {"seed": int(generator)}
    # the factor the image was reduced by: a model that keeps the grid (noise alone, which takes
    # no scale) made no ×f image, whatever `--scale` (default 2) said
    made = f if reduced else 1
    out_image = base.resampled(out_arr, step=f"degraded: {name} x{made}{_describe(params | seed)}")
    if name == "kspace" and params.get("grid") == "fft" and f > 1:
        out_image = _fft_grid_geometry(out_image, (cy, cx), f)
    if lr_no_data is not None and isinstance(source.meta.get("nonfinite_mask"), np.ndarray):
        out_image = out_image.replace(meta={**out_image.meta, "nonfinite_mask": lr_no_data})
    if name == "thick-slice" and volumetric:
        thickness = _simulated_thickness_mm(image, f, params.get("thickness"))
        meta = {k: v for k, v in out_image.meta.items() if k != "slice_thickness_mm"}
        if thickness is not None:
            meta["slice_thickness_mm"] = thickness
        out_image = out_image.replace(meta=meta)
    return out_image


def _fft_grid_geometry(image: MedImage, hr_shape: tuple[int, int], f: int) -> MedImage:
    """``image`` (k-space truncated with ``grid="fft"``, given the cell-centred geometry of
    :meth:`MedImage.resampled`) moved to where its samples are: each in-plane axis by
    :func:`~medsr.degradations.kspace.fft_grid_offset` HR pixels (before, the header of
    ``medsr degrade --kind kspace --param grid=fft`` placed the image half an HR pixel off at ×2)."""
    from medsr.degradations.kspace import fft_grid_offset

    affine = np.array(image.affine, dtype=np.float64)
    # affine columns are (x, y, z); an LR voxel is f HR voxels
    shift = np.array([fft_grid_offset(hr_shape[1], f), fft_grid_offset(hr_shape[0], f), 0.0])
    affine[:3, 3] = affine[:3, 3] + affine[:3, :3] @ (shift / f)
    return image.replace(affine=affine)


def _no_data_at(mask: np.ndarray, values: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Make the no data of a degraded grey volume again, in place, as a scanner makes it at the
    new resolution: an output voxel holds no data where most of the source voxels it covers do
    (``mask``, each reduced axis by its factor), and then the lowest no-data value among them
    (the fill, or a value of a padding range). Returns that output mask."""
    factors = [n // m for n, m in zip(mask.shape, out.shape, strict=True)]
    blocks: list[int] = []
    for n, k in zip(out.shape, factors, strict=True):
        blocks += [n, k]
    axes = (1, 3, 5)
    lr_mask = mask.reshape(blocks).mean(axis=axes) >= 0.5
    fill = np.where(mask, values, np.inf).reshape(blocks).min(axis=axes)
    np.copyto(out, fill.astype(np.float32), where=lr_mask)
    return lr_mask


def _simulated_thickness_mm(image: MedImage, scale: int, thickness: Any) -> float | None:
    """The slice thickness a thick-slice simulation made (what its output's header states, and
    what through-plane upscaling then inverts): the profile's width (``thickness`` thin slices,
    default ``scale``; a Gaussian's FWHM, a box's full width) times the thin slices' spacing; with
    point sampling (0) the thin slices' own thickness when the source states one, else unknown.
    Not the source's SliceThickness × scale, which ignores the simulated profile."""
    from medsr.slice_grid import slice_spacing, slice_thickness_mm

    t = float(scale) if thickness is None else float(thickness)
    return t * slice_spacing(image) if t > 0 else slice_thickness_mm(image)
