"""``loss`` and ``optim`` sections: the pixel loss and the optimiser with its schedule."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from medsr.errors import InvalidParameterError
from medsr.training.config._checks import positive_int


@dataclass
class LossConfig:
    """Pixel loss (``l1``/``l2``/``charbonnier``) + optional SSIM and total-variation terms."""

    pixel: Literal["l1", "l2", "charbonnier"] = "l1"
    pixel_weight: float = 1.0
    charbonnier_eps: float = 1e-3
    ssim_weight: float = 0.0
    tv_weight: float = 0.0

    def validate(self, where: str) -> None:
        for name in ("pixel_weight", "ssim_weight", "tv_weight"):
            v = getattr(self, name)
            if not math.isfinite(v) or v < 0:
                raise InvalidParameterError(f"{where}.{name} must be a finite number ≥ 0, got {v}")
        if self.charbonnier_eps <= 0:
            raise InvalidParameterError(f"{where}.charbonnier_eps must be > 0")
        if self.pixel_weight == 0 and self.ssim_weight == 0:
            raise InvalidParameterError(f"{where}: pixel_weight and ssim_weight cannot both be 0")


@dataclass
class OptimConfig:
    """Optimiser and learning-rate schedule (per optimiser step; linear warm-up first).

    ``cosine`` decays to ``lr × min_lr_ratio`` over the run (``total_steps`` or, when not
    given, the trainer's estimate from max_steps / max_epochs); ``step`` multiplies by
    ``gamma`` every ``step_size`` steps; ``constant`` keeps ``lr``.
    """

    name: Literal["adam", "adamw"] = "adam"
    lr: float = 2e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.0
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.01
    step_size: int = 100_000
    gamma: float = 0.5
    total_steps: int | None = None

    def validate(self, where: str) -> None:
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise InvalidParameterError(f"{where}.lr must be a positive number, got {self.lr}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise InvalidParameterError(
                f"{where}.betas must be two numbers in [0, 1), got {self.betas}"
            )
        if self.weight_decay < 0:
            raise InvalidParameterError(f"{where}.weight_decay must be ≥ 0")
        if self.warmup_steps < 0:
            raise InvalidParameterError(f"{where}.warmup_steps must be ≥ 0")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise InvalidParameterError(f"{where}.min_lr_ratio must be in [0, 1]")
        positive_int(self.step_size, f"{where}.step_size")
        if not 0.0 < self.gamma <= 1.0:
            raise InvalidParameterError(f"{where}.gamma must be in (0, 1]")
        if self.total_steps is not None:
            positive_int(self.total_steps, f"{where}.total_steps")
