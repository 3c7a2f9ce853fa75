"""The self-ensemble: a model's outputs for the 8 flips and 90° rotations of its input, each
turned back, and their mean.

A super-resolver trained with flips and rotations should commute with them; the mean of its 8
turned-back outputs (the *self-ensemble*, Lim et al. 2017) averages out what it does not and is
usually a little more accurate than one pass, at 8× the cost. :func:`ensemble_mean` computes it
for any runner (``medsr.upscale(..., ensemble=True)``, the pipeline's ``--ensemble``); the
safeguards' test-time augmentation (:func:`medsr.safeguards.maps.tta_statistics`) uses the same
transforms for its spread.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from medsr.image import MedImage

__all__ = [
    "DIHEDRAL",
    "as_ensemble",
    "dihedral",
    "dihedral_inverse",
    "ensemble_mean",
    "ensemble_text",
    "run_turned",
    "transforms_text",
]

#: the 8 (rotations by 90°, flip) pairs of the dihedral group D4
DIHEDRAL: tuple[tuple[int, bool], ...] = tuple(
    (k, flip) for flip in (False, True) for k in range(4)
)


def dihedral(a: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """Rotate the last two axes by ``k``·90° then (optionally) mirror the last axis."""
    out = np.rot90(a, k, axes=(-2, -1))
    return out[..., ::-1] if flip else out


def dihedral_inverse(a: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """Undo :func:`dihedral`."""
    out = a[..., ::-1] if flip else a
    return np.rot90(out, -k, axes=(-2, -1))


def run_turned(
    image: MedImage, runner: Callable[[MedImage], MedImage], k: int, flip: bool
) -> np.ndarray:
    """``runner``'s output for ``image`` turned by ``(k, flip)``, turned back."""
    meta = image.meta
    if isinstance(meta.get("nonfinite_mask"), np.ndarray):  # where the NaN were, turned alike
        mask = np.ascontiguousarray(dihedral(meta["nonfinite_mask"], k, flip))
        meta = {**meta, "nonfinite_mask": mask}
    turned = image.replace(array=np.ascontiguousarray(dihedral(image.array, k, flip)), meta=meta)
    return dihedral_inverse(runner(turned).array, k, flip)


def transforms_text(transforms: Sequence[tuple[int, bool]]) -> str:
    return "flips/90-degree rotations" if len(transforms) == 8 else "flips"


def ensemble_text(transforms: Sequence[tuple[int, bool]]) -> str:
    return f"mean of {len(transforms)} {transforms_text(transforms)}"


def as_ensemble(
    identity: MedImage, mean: np.ndarray, transforms: Sequence[tuple[int, bool]]
) -> MedImage:
    """The identity output's record with the ensemble ``mean`` as its pixels."""
    text = ensemble_text(transforms)
    meta = dict(identity.meta)
    meta["derivation"] = {**meta.get("derivation", {}), "ensemble": text}
    return identity.replace(array=mean, meta=meta).with_step(f"self-ensemble: {text}")


def ensemble_mean(
    image: MedImage, runner: Callable[[MedImage], MedImage], transforms: Sequence[tuple[int, bool]]
) -> MedImage:
    """The mean of ``runner``'s outputs over ``transforms`` (the identity among them), summed in
    float32 into the identity's own array (8 terms: a few ulp of rounding)."""
    identity = runner(image)
    acc = np.array(identity.array, dtype=np.float32)  # owned: summed into in place
    identity = identity.replace(array=acc)  # the runner's own array can go
    for k, flip in transforms:
        if (k, flip) != (0, False):
            acc += run_turned(image, runner, k, flip)
    acc /= np.float32(len(transforms))
    return as_ensemble(identity, acc, transforms)
