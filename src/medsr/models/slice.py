"""Slice interpolators: predict slice ``i`` from slices ``i−1`` and ``i+1``.

Every model here takes ``(N, 2, H, W)`` — the two neighbours as channels — and returns the
``(N, 1, H, W)`` slice between them (the midpoint). They are registered with
``kind = "slice-interpolator"``, so :func:`medsr.models.list_models` (upscalers by default)
leaves them out; ``list_models(kind="slice-interpolator")`` lists them, and
:func:`medsr.models.resolver.resolve_model` gives them the kind ``slice-interpolator``.

Architectures only: training is :class:`medsr.training.tasks.SliceInterpolationTask`
(``task: slice-interpolation``), the output grid and inference are
:mod:`medsr.interpolation` (:func:`medsr.interpolation.interpolate_slices`).

* ``interp-cnn`` — residual CNN (EDSR blocks, Lim et al. 2017; global residual over the
  neighbours' mean, Kim et al. 2016), the supervised slice-synthesis set-up of
  Peng et al., SAINT, CVPR 2020;
* ``interp-gan`` — the same generator, deeper, trained against a conditional PatchGAN
  (Isola et al., pix2pix, CVPR 2017);
* ``fast-ddpm`` — conditional diffusion sampled on 10 timesteps (Jiang et al., Fast-DDPM,
  arXiv:2405.14802, 2024).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from medsr.models.blocks import ResidualBlock, conv
from medsr.models.registry import register_model

__all__ = [
    "FAST_DDPM_NON_UNIFORM_10",
    "FastDDPMInterpolator",
    "InterpolationCNN",
    "InterpolationGANGenerator",
    "fast_ddpm_timesteps",
]

#: Fast-DDPM's 10-step non-uniform schedule over T = 1000 (Jiang et al. 2024, official code):
#: 40 % of the steps in t < 700, 60 % concentrated in the high-noise end 700 ≤ t < 1000.
FAST_DDPM_NON_UNIFORM_10 = (0, 199, 399, 599, 699, 799, 849, 899, 949, 999)


def fast_ddpm_timesteps(
    steps: int = 10, schedule: str = "non-uniform", num_train_timesteps: int = 1000
) -> list[int]:
    """The timesteps Fast-DDPM trains on and samples with (ascending).

    ``non-uniform`` with 10 steps is the published list; other step counts split 40 % of the
    steps linearly over ``[0, 0.7T)`` and 60 % over ``[0.7T, T)`` as in the official code.
    ``uniform`` takes every ``T // steps``-th step.
    """
    steps = int(steps)
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    T = int(num_train_timesteps)
    if schedule == "uniform":
        skip = T // steps
        return [min(T - 1, i * skip) for i in range(steps)]
    if schedule != "non-uniform":
        raise ValueError(f"schedule must be 'uniform' or 'non-uniform', got {schedule!r}")
    if steps == 10 and T == 1000:
        return list(FAST_DDPM_NON_UNIFORM_10)
    n1 = int(steps * 0.4)
    n2 = steps - n1
    cut = 0.7 * (T - 1)
    s1 = [math.ceil(cut * i / max(n1, 1)) for i in range(n1)]
    s2 = [math.ceil(cut + (T - 1 - cut) * i / max(n2 - 1, 1)) for i in range(n2)]
    return s1 + s2


class _Interpolator(nn.Module):
    learned = True
    kind = "slice-interpolator"
    in_channels = 2
    out_channels = 1
    #: the output depends on a random seed (diffusion): uncertainty maps add the variance of
    #: several draws (:func:`medsr.interpolation.interpolation_uncertainty`)
    stochastic = False


def _residual_body(in_channels: int, num_features: int, num_blocks: int) -> nn.Sequential:
    return nn.Sequential(
        conv(in_channels, num_features, 3),
        nn.ReLU(inplace=True),
        *[ResidualBlock(num_features, act="relu") for _ in range(num_blocks)],
        conv(num_features, 1, 3),
    )


@register_model("interp-cnn")
class InterpolationCNN(_Interpolator):
    """Residual slice-interpolation CNN: ``mean(neighbours) + body(neighbours)``.

    conv 2→``num_features`` (64) + ReLU, ``num_blocks`` (5) EDSR-style residual blocks
    (Lim et al. 2017), conv → 1; the output is added to the mean of the two neighbours (global
    residual learning as in VDSR, Kim et al. 2016), trained with L1. The supervised
    slice-synthesis set-up follows the CNN baselines of volumetric slice interpolation, e.g.
    Peng et al., "SAINT: Spatially Aware Interpolation NeTwork for Medical Slice Synthesis",
    CVPR 2020.
    """

    def __init__(
        self,
        in_channels: int = 2,
        out_channels: int = 1,
        num_features: int = 64,
        num_blocks: int = 5,
    ):
        super().__init__()
        if in_channels != 2 or out_channels != 1:
            raise ValueError("slice interpolators map 2 neighbour slices to 1 slice")
        self.body = _residual_body(2, num_features, num_blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=1, keepdim=True) + self.body(x)


@register_model("interp-gan")
class InterpolationGANGenerator(InterpolationCNN):
    """Generator of the adversarial slice interpolator: the residual CNN with 8 blocks.

    Trained with L1 + λ·BCE adversarial loss against a conditional PatchGAN discriminator
    (Isola et al., "Image-to-Image Translation with Conditional Adversarial Networks", CVPR 2017)
    that sees ``[neighbour, slice, neighbour]``; the content + adversarial recipe is SRGAN's
    (Ledig et al., CVPR 2017) with an L1 content term.
    """

    def __init__(
        self,
        in_channels: int = 2,
        out_channels: int = 1,
        num_features: int = 64,
        num_blocks: int = 8,
    ):
        super().__init__(in_channels, out_channels, num_features, num_blocks)


@register_model("fast-ddpm")
class FastDDPMInterpolator(_Interpolator):
    """Conditional diffusion slice interpolator trained and sampled on 10 timesteps (Fast-DDPM).

    Jiang et al., "Fast-DDPM: Fast Denoising Diffusion Probabilistic Models for Medical
    Image-to-Image Generation", arXiv:2405.14802 (2024; IEEE JBHI 2025). Fast-DDPM trains only on
    the timesteps it samples with — 10 out of T = 1000, linear β from 1e-4 to 0.02 — and its
    non-uniform schedule ``[0, 199, 399, 599, 699, 799, 849, 899, 949, 999]`` puts 60 % of the
    steps in the high-noise end (t ≥ 700). Sampling is the DDIM update (Song et al. 2021) over
    exactly those timesteps (``eta = 0`` deterministic; ``eta = 1`` DDPM-like stochastic), one
    network evaluation per step. The network is MONAI's ``DiffusionModelUNet`` (sinusoidal
    timestep embedding) with 3 input channels: the noisy target and the two neighbours.

    Deviation from the paper: with ``residual=True`` (default) the diffusion runs on the
    residual ``slice − mean(neighbours)`` rather than on the slice itself, which makes the
    short CPU trainings of this project usable; ``residual=False`` is the paper's form.

    Stochastic: different seeds give different slices (different initial noise, even with the
    deterministic ``eta = 0`` update), so its uncertainty map includes the variance of
    several draws.
    """

    stochastic = True
    alphas_cumprod: torch.Tensor  # buffer (not saved): ᾱ_t of the linear β schedule

    def __init__(
        self,
        in_channels: int = 2,
        out_channels: int = 1,
        channels: tuple[int, ...] | list[int] = (32, 64, 64),
        num_res_blocks: int = 1,
        norm_num_groups: int = 16,
        steps: int = 10,
        schedule: str = "non-uniform",
        num_train_timesteps: int = 1000,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        residual: bool = True,
        eta: float = 0.0,
    ):
        super().__init__()
        if in_channels != 2 or out_channels != 1:
            raise ValueError("slice interpolators map 2 neighbour slices to 1 slice")
        from monai.networks.nets import DiffusionModelUNet

        channels = tuple(int(c) for c in channels)
        self.unet = DiffusionModelUNet(
            spatial_dims=2,
            in_channels=3,
            out_channels=1,
            num_res_blocks=num_res_blocks,
            channels=channels,
            attention_levels=(False,) * len(channels),
            norm_num_groups=norm_num_groups,
        )
        self.multiple = 2 ** (len(channels) - 1)
        self.timesteps = fast_ddpm_timesteps(steps, schedule, num_train_timesteps)
        self.residual = bool(residual)
        self.eta = float(eta)
        betas = torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float64)
        self.register_buffer(
            "alphas_cumprod", torch.cumprod(1.0 - betas, 0).float(), persistent=False
        )

    # ---------------------------------------------------------------- training
    def base(self, cond: torch.Tensor) -> torch.Tensor:
        return cond.mean(dim=1, keepdim=True) if self.residual else torch.zeros_like(cond[:, :1])

    def eps(self, x_t: torch.Tensor, cond: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """One network evaluation: predicted noise for ``x_t`` at timesteps ``t`` given ``cond``."""
        return self.unet(torch.cat([x_t, cond], dim=1), timesteps=t)

    def training_loss(
        self, cond: torch.Tensor, target: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """ε-prediction MSE with t drawn from the configured timesteps only (Fast-DDPM)."""
        x0 = target - self.base(cond)
        n = x0.shape[0]
        ts = torch.tensor(self.timesteps, device=x0.device)
        t = ts[torch.randint(len(ts), (n,), generator=generator).to(x0.device)]
        noise = torch.randn(x0.shape, generator=generator).to(x0)
        a = self.alphas_cumprod.to(x0.device)[t].view(n, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        return F.mse_loss(self.eps(x_t, cond, t), noise)

    # ---------------------------------------------------------------- sampling
    @torch.no_grad()
    def sample(
        self, cond: torch.Tensor, *, seed: int = 0, samples: int = 1, eta: float | None = None
    ) -> torch.Tensor:
        """Slice between the neighbours ``cond`` ``(N, 2, H, W)``; mean of ``samples`` draws.

        Exactly ``len(self.timesteps)`` network evaluations (the draws are batched). Seeded:
        same ``seed`` → same output.
        """
        eta = self.eta if eta is None else float(eta)
        n, _, h, w = cond.shape
        m = self.multiple
        ph, pw = (-h) % m, (-w) % m
        c = F.pad(cond, (0, pw, 0, ph), mode="replicate") if (ph or pw) else cond
        k = max(1, int(samples))
        c = c.repeat(k, 1, 1, 1)
        gen = torch.Generator().manual_seed(int(seed))
        x = torch.randn(c[:, :1].shape, generator=gen).to(c)
        abar = self.alphas_cumprod.to(c.device)
        seq = list(self.timesteps)
        seq_next = [-1, *seq[:-1]]
        for t, t_next in zip(reversed(seq), reversed(seq_next), strict=True):
            at = abar[t]
            an = abar[t_next] if t_next >= 0 else torch.ones((), device=c.device)
            tt = torch.full((x.shape[0],), t, device=c.device, dtype=torch.long)
            e = self.eps(x, c, tt)
            x0 = (x - (1 - at).sqrt() * e) / at.sqrt()
            x0 = x0.clamp(-1.5, 1.5)
            sigma = eta * ((1 - an) / (1 - at) * (1 - at / an)).clamp(min=0).sqrt()
            dir_coef = (1 - an - sigma**2).clamp(min=0).sqrt()
            noise = torch.randn(x.shape, generator=gen).to(c) if eta > 0 else 0.0
            x = an.sqrt() * x0 + dir_coef * e + sigma * noise
        out = x.view(k, n, 1, *x.shape[-2:]).mean(0)
        out = out + self.base(c[:n])
        return out[..., :h, :w]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.sample(x)
