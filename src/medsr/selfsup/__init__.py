"""Zero-shot self-supervised super-resolution: learn from the image or volume being upscaled.

* :func:`zero_shot_upscale` — in-plane scale transfer (ZSSR): LR → very-LR pairs from the image
  itself train a small residual CNN that is then applied LR → HR.
* :func:`through_plane_upscale` — through-plane SR for thick-slice volumes: the shipped prior
  (``tp-x2``/``tp-x4``), optionally adapted to the volume for a fixed number of seeded steps on
  its own in-plane slices degraded by the slice profile (SMORE's idea), applied to the sagittal
  and coronal reformats, fused, and resampled to isotropic (or a target) spacing;
  :mod:`medsr.selfsup.slice_profile` estimates the profile when the header does not say it.
* :func:`interpolate_z` — linear / cubic interpolation along z, the baselines.
"""

from medsr.selfsup.inplane import zero_shot_upscale
from medsr.selfsup.pyramid import PatchSampler, build_pyramid
from medsr.selfsup.through_plane import interpolate_z, through_plane_upscale

__all__ = [
    "PatchSampler",
    "build_pyramid",
    "interpolate_z",
    "through_plane_upscale",
    "zero_shot_upscale",
]
