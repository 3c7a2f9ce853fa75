"""Training pairs from the input itself: the HR-less pyramid and a seeded patch sampler.

Zero-shot super-resolution (Shocher, Cohen and Irani, "'Zero-Shot' Super-Resolution using Deep
Internal Learning", CVPR 2018) has no high-resolution example: the input **LR** image plays the
HR role and a **very-LR** copy is made from it with the degradation the acquisition is assumed
to have (default: Gaussian blur σ = √(f² − 1)/2 px + antialiased bicubic ×f downscale, see
:func:`medsr.degradations.downscale_pyramid`). A network that maps very-LR → LR is then applied
to LR → HR, relying on the self-similarity of image structure across scales.

:class:`PatchSampler` draws random aligned patch pairs from any number of (low, high) planes —
the slices of a volume, or in-plane slices with one axis degraded for through-plane SR — with
flips and 90° rotations, deterministically from a seed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from medsr.errors import InvalidParameterError

__all__ = ["PatchSampler", "build_pyramid", "no_data_target"]


def build_pyramid(
    lr: torch.Tensor,
    scale: int = 2,
    *,
    degradation: str = "bicubic",
    blur_sigma: float | None = None,
    params: dict[str, Any] | None = None,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(very_lr, lr)``: the input and its ×``scale`` degraded copy.

    Args:
        lr: ``(N, C, H, W)`` input planes (the image to super-resolve, in model space).
        scale: integer factor; ``very_lr`` is ``(N, C, ⌊H/f⌋, ⌊W/f⌋)``.
        degradation: ``"bicubic"`` (default: Gaussian pre-blur, then antialiased bicubic) or the
            name of any in-plane degradation of :mod:`medsr.degradations` (``"kspace"``,
            ``"ct-detector"``, ...) with its ``params``.
        blur_sigma: σ of the bicubic pre-blur in LR pixels (default
            :func:`~medsr.degradations.pyramid_blur_sigma`; 0 for plain bicubic).
        params: parameters of a non-bicubic degradation.
        seed: noise seed for degradations that draw noise.

    Returns:
        ``very_lr`` and ``lr`` cropped (trailing rows/columns) to ``scale`` × ``very_lr``'s size,
        so very-LR pixel ``j`` is centred on LR index ``f·j + (f − 1)/2`` (cell-centred).
    """
    from medsr.degradations import downscale_pyramid
    from medsr.degradations._common import check_scale, check_tensor, crop_to_multiple
    from medsr.degradations._registry import get_factory

    x = check_tensor(lr, (4,), "lr")
    f = check_scale(scale)
    name = str(degradation).strip().lower()
    if name == "bicubic":
        if params:
            extra = sorted(set(params) - {"blur_sigma"})
            if extra:
                raise InvalidParameterError(f"bicubic pyramid takes only blur_sigma, got {extra}")
            blur_sigma = params.get("blur_sigma", blur_sigma)
        hi, lo = downscale_pyramid(x, f, levels=1, blur_sigma=blur_sigma)
        return lo, hi
    factory = get_factory(name)
    fn = getattr(factory, "function", None)
    if fn is None or getattr(factory, "volumetric", False):
        raise InvalidParameterError(
            f"degradation {degradation!r} cannot build an in-plane pyramid; use bicubic or another "
            "in-plane degradation (kspace, ct-detector, radiograph...)"
        )
    extra: dict[str, Any] = {}
    if getattr(factory, "uses_generator", False):
        extra["generator"] = torch.Generator().manual_seed(int(seed))
    hi = crop_to_multiple(x, f, (-2, -1))
    with torch.no_grad():
        lo = fn(hi, f, **(params or {}), **extra)
    if tuple(lo.shape[-2:]) != (hi.shape[-2] // f, hi.shape[-1] // f):
        raise InvalidParameterError(
            f"degradation {degradation!r} does not reduce both axes by {f}; it cannot build an "
            "in-plane pyramid"
        )
    return lo, hi


def _as_pair(scale: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(scale, int | float) and not isinstance(scale, bool):
        sy = sx = scale
    else:
        sy, sx = tuple(scale)
    if int(sy) != sy or int(sx) != sx or sy < 1 or sx < 1:
        raise InvalidParameterError(f"scale must be positive integers (per axis), got {scale!r}")
    return int(sy), int(sx)


class PatchSampler:
    """Random aligned patch pairs from (low, high) planes, deterministic with a seed.

    Args:
        pairs: ``(low, high)`` tensors ``(C, h, w)`` and ``(C, h·sy, w·sx)`` (e.g. the very-LR
            and LR slices of :func:`build_pyramid`); shapes may differ between pairs.
        scale: factor ``f`` (both axes) or ``(sy, sx)`` (``(f, 1)`` for one-axis through-plane
            pairs).
        patch_size: side of the square *high* patch (default 64); clipped to the smallest plane
            and rounded down to a multiple of the scale.
        patches_per_epoch: pairs of patches per epoch (default 10,000).
        augment: random flips, and 90° rotations/transposes when both axes have the same scale
            (a one-axis pair keeps its degraded axis in place, so only flips apply).
        seed: epoch ``e`` draws from ``torch.Generator().manual_seed(seed, e)``: the same seed
            gives the same patches in the same order.

    Planes are drawn with probability proportional to their number of patch positions (uniform
    over pixels); constant planes (background-only slices) are left out when any plane is not.

    **No data**: a *high* plane may hold NaN where the image holds no data (DICOM padding, a
    CT's fill outside the scan circle, a NIfTI's NaN: the zero-shot methods set it there,
    :func:`no_data_target`); such pixels are no target — :func:`medsr.selfsup._fit.fit` leaves
    them out of the loss — and a patch without a single held target pixel is drawn again (up
    to :data:`REDRAWS` times), so the budget goes to pixels that hold data. Planes without any
    held pixel are left out like constant ones.
    """

    def __init__(
        self,
        pairs: Sequence[tuple[torch.Tensor, torch.Tensor]],
        scale: int | Sequence[int] = 2,
        *,
        patch_size: int = 64,
        patches_per_epoch: int = 10_000,
        augment: bool = True,
        seed: int = 0,
    ) -> None:
        self.sy, self.sx = _as_pair(scale)
        if not pairs:
            raise InvalidParameterError("no training planes: the image is empty")
        if int(patches_per_epoch) != patches_per_epoch or patches_per_epoch < 1:
            raise InvalidParameterError(
                f"patches_per_epoch must be a positive integer, got {patches_per_epoch!r}"
            )
        clean = []
        for lo, hi in pairs:
            if lo.ndim != 3 or hi.ndim != 3:
                raise InvalidParameterError("pairs must be (C, h, w) tensors")
            if hi.shape[-2] != lo.shape[-2] * self.sy or hi.shape[-1] != lo.shape[-1] * self.sx:
                raise InvalidParameterError(
                    f"high plane {tuple(hi.shape)} is not ({self.sy}, {self.sx}) × low plane {tuple(lo.shape)}"
                )
            clean.append((lo.contiguous(), hi.contiguous()))
        if isinstance(patch_size, bool) or int(patch_size) != patch_size or patch_size < 1:
            raise InvalidParameterError(
                f"patch_size must be a positive integer, got {patch_size!r}"
            )
        step = math.lcm(self.sy, self.sx)
        smallest = min(min(hi.shape[-2:]) for _, hi in clean)
        p = min(int(patch_size), smallest) // step * step
        if p < step or p // max(self.sy, self.sx) < 2:
            raise InvalidParameterError(
                f"the image ({smallest} px) is too small for ×{max(self.sy, self.sx)} self-supervised training"
            )
        self.patch_size = p
        varying = [i for i, (_, hi) in enumerate(clean) if _varies(hi)]
        self.pairs = [clean[i] for i in varying] if varying else clean
        # number of valid top-left positions of a low patch, per plane
        lh, lw = p // self.sy, p // self.sx
        self._positions = [
            ((lo.shape[-2] - lh + 1), (lo.shape[-1] - lw + 1)) for lo, _ in self.pairs
        ]
        weights = torch.tensor([float(a * b) for a, b in self._positions], dtype=torch.float64)
        self._weights = weights / weights.sum()
        self.patches_per_epoch = int(patches_per_epoch)
        self.augment = bool(augment)
        self.seed = int(seed)
        self.isotropic = self.sy == self.sx
        self.has_no_data = any(bool(torch.isnan(hi).any()) for _, hi in self.pairs)

    def __len__(self) -> int:
        return self.patches_per_epoch

    @property
    def low_patch_shape(self) -> tuple[int, int]:
        return self.patch_size // self.sy, self.patch_size // self.sx

    def generator(self, epoch: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1_000_003 + int(epoch))

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` aligned pairs: ``(n, C, p/sy, p/sx)`` low and ``(n, C, p, p)`` high patches."""
        idx = torch.multinomial(self._weights, n, replacement=True, generator=generator)
        u = torch.rand((n, 2), generator=generator, dtype=torch.float64)
        ops = torch.randint(0, 8 if self.isotropic else 4, (n,), generator=generator)
        lh, lw = self.low_patch_shape
        lows, highs = [], []
        for k in range(n):
            i = int(idx[k])
            lo, hi = self.pairs[i]
            ny, nx = self._positions[i]
            y = min(int(u[k, 0] * ny), ny - 1)
            x = min(int(u[k, 1] * nx), nx - 1)
            b = hi[:, y * self.sy : (y + lh) * self.sy, x * self.sx : (x + lw) * self.sx]
            redraws = REDRAWS if self.has_no_data else 0
            while redraws and bool(torch.isnan(b).all()):  # no target in it: another place
                i = int(torch.multinomial(self._weights, 1, generator=generator))
                lo, hi = self.pairs[i]
                ny, nx = self._positions[i]
                v = torch.rand(2, generator=generator, dtype=torch.float64)
                y, x = min(int(v[0] * ny), ny - 1), min(int(v[1] * nx), nx - 1)
                b = hi[:, y * self.sy : (y + lh) * self.sy, x * self.sx : (x + lw) * self.sx]
                redraws -= 1
            a = lo[:, y : y + lh, x : x + lw]
            if self.augment:
                a, b = _dihedral(a, int(ops[k])), _dihedral(b, int(ops[k]))
            lows.append(a)
            highs.append(b)
        return torch.stack(lows), torch.stack(highs)

    def batches(
        self, epoch: int, batch_size: int = 16
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch: ``patches_per_epoch`` pairs in batches of ``batch_size`` (the last may be
        smaller)."""
        g = self.generator(epoch)
        done = 0
        while done < self.patches_per_epoch:
            n = min(int(batch_size), self.patches_per_epoch - done)
            yield self.sample(n, g)
            done += n


#: draws of another patch position when one holds no target pixel (:class:`PatchSampler`)
REDRAWS = 16


def _varies(hi: torch.Tensor) -> bool:
    """Whether a high plane's held (non-NaN) pixels take more than one value."""
    held = hi[~torch.isnan(hi)]
    return bool(held.numel()) and float(held.max() - held.min()) > 0


def no_data_target(high: torch.Tensor, no_data: Any) -> torch.Tensor:
    """``high`` (``(N, C, H, W)`` training targets, a copy) with NaN where ``no_data`` (a boolean
    array of at least ``H × W`` per plane, cropped to ``high``'s trailing rows and columns) says
    the image holds none: no target there (:class:`PatchSampler`). ``high`` itself when
    ``no_data`` is None."""
    if no_data is None:
        return high
    mask = torch.as_tensor(no_data, dtype=torch.bool)[..., : high.shape[-2], : high.shape[-1]]
    return high.masked_fill(mask.reshape(high.shape), float("nan"))


def _dihedral(t: torch.Tensor, op: int) -> torch.Tensor:
    """One of the 8 flips/rotations of the square (ops 0–3 keep the axes: identity and flips)."""
    if op & 1:
        t = t.flip(-1)
    if op & 2:
        t = t.flip(-2)
    if op & 4:
        t = t.transpose(-2, -1)
    return t
