"""Training losses (differentiable, batched ``(N, C, H, W)`` torch tensors).

* :func:`l1_loss`, :func:`l2_loss`, :func:`charbonnier_loss` — pixel losses; Charbonnier
  ``mean(sqrt((x − y)² + ε²))`` (Lai et al., LapSRN, CVPR 2017) is a smooth L1.
* :func:`ssim_loss` — ``1 − SSIM`` with the Gaussian window of :mod:`medsr.metrics`
  (σ = 1.5, 11 taps, K1 = 0.01, K2 = 0.03, averaged over the valid region), for images in
  normalised units (``data_range = 1``).
* :func:`tv_loss` — anisotropic total variation ``mean|∂x| + mean|∂y|``.
* :func:`discriminator_loss` / :func:`generator_adversarial_loss` — BCE-with-logits GAN losses
  (``vanilla``, Goodfellow 2014 / SRGAN, Ledig et al. CVPR 2017) or the relativistic-average
  form (``relativistic``, Jolicoeur-Martineau 2018; ESRGAN, Wang et al. 2018).
* :func:`feature_loss` — content loss: mean L1 between discriminator features of SR and
  HR (HR features detached), a perceptual loss that needs no ImageNet network.
* :class:`PixelCriterion` — the configured mix for the ``loss`` section.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medsr.errors import InvalidParameterError

__all__ = [
    "PixelCriterion",
    "charbonnier_loss",
    "discriminator_loss",
    "feature_loss",
    "generator_adversarial_loss",
    "l1_loss",
    "l2_loss",
    "ssim_loss",
    "ssim_torch",
    "tv_loss",
]


def l1_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(pred, target)


def l2_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(pred, target)


def charbonnier_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    d = pred - target
    return torch.sqrt(d * d + eps * eps).mean()


def _gaussian_window(
    device: torch.device, dtype: torch.dtype, sigma: float = 1.5, taps: int = 11
) -> torch.Tensor:
    x = torch.arange(taps, device=device, dtype=dtype) - (taps - 1) / 2
    w = torch.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def _blur_valid(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    c = x.shape[1]
    k = w.numel()
    x = F.conv2d(x, w.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)
    return F.conv2d(x, w.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)


def ssim_torch(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Mean SSIM over the valid region (no padding), per batch, as a differentiable scalar.

    Matches :func:`medsr.metrics.ssim2d` (population statistics, Gaussian σ = 1.5, 11 taps).
    Computed in float32 even under mixed precision.
    """
    if pred.shape != target.shape or pred.ndim != 4:
        raise InvalidParameterError(
            f"ssim needs two (N, C, H, W) tensors of one shape, got {pred.shape}, {target.shape}"
        )
    if min(pred.shape[-2:]) < 11:
        raise InvalidParameterError(
            f"ssim needs images of at least 11×11 pixels, got {tuple(pred.shape[-2:])}"
        )
    x, y = pred.float(), target.float()
    w = _gaussian_window(x.device, x.dtype)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = _blur_valid(x, w), _blur_valid(y, w)
    sxx = _blur_valid(x * x, w) - mx * mx
    syy = _blur_valid(y * y, w) - my * my
    sxy = _blur_valid(x * y, w) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return s.mean()


def ssim_loss(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """``1 − SSIM`` (0 for identical images)."""
    return 1.0 - ssim_torch(pred, target, data_range)


def tv_loss(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation: mean absolute horizontal + vertical differences."""
    return (x[..., :, 1:] - x[..., :, :-1]).abs().mean() + (
        x[..., 1:, :] - x[..., :-1, :]
    ).abs().mean()


def _bce(logits: torch.Tensor, real: bool) -> torch.Tensor:
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits.float(), target.float())


def discriminator_loss(
    d_real: torch.Tensor, d_fake: torch.Tensor, kind: str = "vanilla"
) -> torch.Tensor:
    """Discriminator loss from its logits on HR (``d_real``) and SR (``d_fake``, detached)."""
    if kind == "vanilla":
        return 0.5 * (_bce(d_real, True) + _bce(d_fake, False))
    if kind == "relativistic":
        return 0.5 * (_bce(d_real - d_fake.mean(), True) + _bce(d_fake - d_real.mean(), False))
    raise InvalidParameterError(f"unknown adversarial loss {kind!r} (vanilla or relativistic)")


def generator_adversarial_loss(
    d_real: torch.Tensor, d_fake: torch.Tensor, kind: str = "vanilla"
) -> torch.Tensor:
    """Generator's adversarial loss (``d_real`` is only used by the relativistic form; detach it)."""
    if kind == "vanilla":
        return _bce(d_fake, True)
    if kind == "relativistic":
        return 0.5 * (_bce(d_real - d_fake.mean(), False) + _bce(d_fake - d_real.mean(), True))
    raise InvalidParameterError(f"unknown adversarial loss {kind!r} (vanilla or relativistic)")


def feature_loss(
    fake_features: Sequence[torch.Tensor], real_features: Sequence[torch.Tensor]
) -> torch.Tensor:
    """Mean over layers of the L1 distance between features (``real_features`` are detached)."""
    if len(fake_features) != len(real_features) or not fake_features:
        raise InvalidParameterError("feature_loss needs two equally long, non-empty feature lists")
    total = 0.0
    for f, r in zip(fake_features, real_features, strict=True):
        total = total + F.l1_loss(f.float(), r.detach().float())
    return total / len(fake_features)


class PixelCriterion(nn.Module):
    """``pixel_weight``·pixel + ``ssim_weight``·(1 − SSIM) + ``tv_weight``·TV(sr).

    Returns ``(total, parts)`` where ``parts`` maps each active term to its (unweighted) value.
    """

    def __init__(
        self,
        pixel: str = "l1",
        *,
        pixel_weight: float = 1.0,
        charbonnier_eps: float = 1e-3,
        ssim_weight: float = 0.0,
        tv_weight: float = 0.0,
    ) -> None:
        super().__init__()
        if pixel not in ("l1", "l2", "charbonnier"):
            raise InvalidParameterError(f"unknown pixel loss {pixel!r} (l1, l2 or charbonnier)")
        self.pixel = pixel
        self.pixel_weight = float(pixel_weight)
        self.eps = float(charbonnier_eps)
        self.ssim_weight = float(ssim_weight)
        self.tv_weight = float(tv_weight)

    @classmethod
    def from_config(cls, cfg: object) -> PixelCriterion:
        return cls(
            cfg.pixel,  # type: ignore[attr-defined]
            pixel_weight=cfg.pixel_weight,  # type: ignore[attr-defined]
            charbonnier_eps=cfg.charbonnier_eps,  # type: ignore[attr-defined]
            ssim_weight=cfg.ssim_weight,  # type: ignore[attr-defined]
            tv_weight=cfg.tv_weight,  # type: ignore[attr-defined]
        )

    def pixel_loss(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        sr, hr = sr.float(), hr.float()
        if self.pixel == "l1":
            return l1_loss(sr, hr)
        if self.pixel == "l2":
            return l2_loss(sr, hr)
        return charbonnier_loss(sr, hr, self.eps)

    def forward(
        self, sr: torch.Tensor, hr: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        parts: dict[str, torch.Tensor] = {}
        total = sr.new_zeros((), dtype=torch.float32)
        if self.pixel_weight:
            parts[self.pixel] = self.pixel_loss(sr, hr)
            total = total + self.pixel_weight * parts[self.pixel]
        if self.ssim_weight:
            parts["ssim"] = ssim_loss(sr, hr)
            total = total + self.ssim_weight * parts["ssim"]
        if self.tv_weight:
            parts["tv"] = tv_loss(sr.float())
            total = total + self.tv_weight * parts["tv"]
        return total, parts
