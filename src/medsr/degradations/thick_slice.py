"""Thick-slice acquisition: slice-profile blur along one axis, then every f-th slice.

Physics: a 2-D multi-slice MR (or thick-reformatted CT) acquisition excites slabs whose
through-plane sensitivity — the slice profile — is roughly Gaussian (MR selective excitation)
or rectangular (CT detector-row binning), with a full width (slice thickness) of about the slice
spacing, and samples one slab every ``f`` thin slices. The thick volume is therefore the thin
volume convolved with the slice profile along z and decimated by ``f``. References:
H. Greenspan, "Super-resolution in medical imaging", The Computer Journal 52(1):43–63, 2009;
C. Zhao et al., "SMORE: a self-supervised anti-aliasing and super-resolution algorithm for
MRI using deep learning", IEEE TMI 40(3):805–817, 2021 (the same model applied to an in-plane
axis of 2-D slices to make training pairs for through-plane SR).

Conventions: thickness is in units of HR (thin) slices — the FWHM of the Gaussian profile or
the full width of the rectangle, default ``f`` (contiguous slabs). Each thin slice is a unit
slab, so the profile is integrated over it. Thick slice ``j`` is **centred** on thin-slice
position ``f·j + (f − 1)/2``: for odd ``f`` that is thin slice ``f·j + (f−1)/2``; for even ``f``
the midpoint of thin slices ``f·j + f/2 − 1`` and ``f·j + f/2``. So the box profile of width
``f`` averages exactly thin slices ``f·j … f·j + f − 1`` and the geometry is the cell-centred
one of :meth:`medsr.image.MedImage.resampled`. Trailing slices beyond a multiple of ``f``
are dropped first; borders are mirrored (symmetric).
"""

from __future__ import annotations

import numpy as np
import torch

from medsr.degradations._common import (
    FWHM_PER_SIGMA,
    RandomDegradation,
    cell_weights,
    check_nonnegative,
    check_scale,
    check_tensor,
    crop_to_multiple,
    filter_axis,
    normalize_axis,
)
from medsr.degradations._registry import register_degradation
from medsr.errors import InvalidParameterError

__all__ = ["RandomThickSlice", "thick_slice", "thick_slice_matrix", "thicken"]


def thick_slice(
    x: torch.Tensor,
    scale: int,
    *,
    profile: str = "gaussian",
    thickness: float | None = None,
    axis: int | None = None,
) -> torch.Tensor:
    """Slice-profile blur along ``axis`` then keep every ``scale``-th (centred) slice.

    Args:
        x: ``(N, C, D, H, W)`` volume (default axis −3, z) or ``(N, C, H, W)`` slices with
            ``axis`` −1 or −2 (through-plane simulation on an in-plane axis).
        scale: integer factor ``f``; the degraded axis becomes ``⌊n/f⌋`` long.
        profile: ``"gaussian"`` (``thickness`` = FWHM) or ``"box"`` (``thickness`` = full width).
        thickness: slice thickness in thin slices (default ``f``; 0 = point sampling).
        axis: the axis to degrade; must be a spatial axis (not N or C).
    """
    x = check_tensor(x, (4, 5))
    f = check_scale(scale)
    if axis is None:
        if x.ndim != 5:
            raise InvalidParameterError(
                "thick_slice on (N, C, H, W) slices needs axis=-1 or axis=-2 (the axis to thicken)"
            )
        axis = -3
    ax = normalize_axis(axis, x.ndim)
    if ax < 2:
        raise InvalidParameterError(f"axis {axis} is the batch or channel axis, not a spatial one")
    t = float(f) if thickness is None else check_nonnegative(thickness, "thickness")
    if profile == "gaussian":
        width = t / FWHM_PER_SIGMA
    elif profile == "box":
        width = t
    else:
        raise InvalidParameterError(f"unknown slice profile {profile!r} (gaussian or box)")
    x = crop_to_multiple(x, f, (ax,))
    return filter_axis(x, ax, f, profile=profile, width=width)


def thick_slice_matrix(
    n_in: int, n_out: int, *, profile: str = "gaussian", thickness: float
) -> np.ndarray:
    """The thick-slice measurement of an ``n_out``-slice grid as an ``(n_in, n_out)`` matrix.

    Row ``i`` holds the weights with which the ``n_out`` thin slices of the same field of view
    (cell-centred, :func:`medsr.slice_grid.cell_positions`) make measured slice ``i``: the slice
    profile (``profile``, FWHM or full width ``thickness`` in *measured* slice spacings)
    integrated over each thin slice, centred on slice ``i``, borders mirrored, each row summing
    to one. Any ratio ``n_out / n_in`` works (a through-plane output resampled to a target
    spacing); for ``n_out = f·n_in`` it is :func:`thick_slice` at factor ``f`` with thickness
    ``f·thickness`` (the same weights, to float rounding).
    """
    n_in, n_out = int(n_in), int(n_out)
    if n_in < 1 or n_out < 1:
        raise InvalidParameterError(f"slice counts must be positive, got {n_in} and {n_out}")
    t = check_nonnegative(thickness, "thickness")
    r = n_out / n_in  # thin slices per measured slice
    if profile not in ("gaussian", "box"):
        raise InvalidParameterError(f"unknown slice profile {profile!r} (gaussian or box)")
    width = t * r / FWHM_PER_SIGMA if profile == "gaussian" else t * r  # in thin slices
    out = np.zeros((n_in, n_out), np.float64)
    for i in range(n_in):  # measured slice i is centred at (i + ½)·r − ½ thin slices
        d, w = cell_weights(profile, width, (i + 0.5) * r - 0.5)
        # mirror the cells beyond the ends (half-sample symmetric, as thick_slice's borders)
        j = np.mod(d, 2 * n_out)
        j = np.where(j >= n_out, 2 * n_out - 1 - j, j)
        np.add.at(out[i], j, w)
        out[i] /= out[i].sum()
    return out


def thicken(
    array: np.ndarray,
    n_low: int,
    *,
    profile: str,
    thickness: float,
    axis: int = 0,
    no_data: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """``array``'s slices along ``axis`` measured as ``n_low`` thick slices of the same field of
    view (:func:`thick_slice_matrix`, ``thickness`` in thick-slice spacings), float32, and where
    those hold data: ``no_data`` (shaped like ``array``) marks the thin voxels that hold none,
    and a thick voxel holds none where any thin voxel under its profile holds none (``None``
    without ``no_data``). How an error bound's calibration makes a volume thick once more."""
    x = np.moveaxis(np.asarray(array, np.float32), axis, 0)
    n = x.shape[0]
    weights = thick_slice_matrix(n_low, n, profile=profile, thickness=thickness)
    low = (weights.astype(np.float32) @ x.reshape(n, -1)).reshape(n_low, *x.shape[1:])
    held = None
    if no_data is not None:
        under = (weights > 1e-6).astype(np.float32)
        pad = np.moveaxis(np.asarray(no_data, bool), axis, 0).reshape(n, -1).astype(np.float32)
        held = np.moveaxis(~((under @ pad) > 0).reshape(low.shape), 0, axis)
    return np.moveaxis(low, 0, axis), held


@register_degradation("thick-slice")
class RandomThickSlice(RandomDegradation):
    """Thick-slice degradation with random profile and thickness.

    Args:
        scale: integer factor.
        profile: ``"gaussian"``, ``"box"`` or a list of them.
        thickness: ``None`` (= scale), a value or ``(low, high)`` in thin slices.
        axis: see :func:`thick_slice`.
    """

    function = staticmethod(thick_slice)
    volumetric = True

    def __init__(
        self,
        scale: int = 2,
        profile="gaussian",
        thickness=None,
        axis: int | None = None,
        *,
        per_sample: bool = True,
    ) -> None:
        super().__init__(
            scale, per_sample=per_sample, profile=profile, thickness=thickness, axis=axis
        )
