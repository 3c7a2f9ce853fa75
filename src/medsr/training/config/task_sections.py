"""The sections one task adds: ``gan`` (adversarial), ``distill`` (distillation) and ``slices``
(slice interpolation)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from medsr.errors import InvalidParameterError
from medsr.inference.ensemble import DIHEDRAL
from medsr.training.config._checks import positive_int
from medsr.training.config.model import ModelConfig

#: teacher_ensemble size -> the dihedral transforms (k·90° rotation, mirror) it averages
TEACHER_ENSEMBLES: dict[int, tuple[tuple[int, bool], ...]] = {
    1: ((0, False),),
    2: ((0, False), (2, False)),
    8: DIHEDRAL,
}


@dataclass
class GanConfig:
    """Adversarial fine-tuning (:class:`~medsr.training.tasks.SRGANTask`).

    Generator loss = ``pixel_weight``·pixel loss (section ``loss``) + ``adv_weight``·adversarial
    + ``content_weight``·L1 between discriminator features of SR and HR + ``tv_weight``·TV.
    ``generator_init``: a ``.safetensors`` from :func:`~medsr.training.run.export` or a
    ``.ckpt`` written by medsr training (warm start; never a checkpoint from elsewhere).
    """

    discriminator: ModelConfig = field(default_factory=lambda: ModelConfig("srgan-discriminator"))
    generator_init: str | None = None
    adversarial: Literal["vanilla", "relativistic"] = "vanilla"
    pixel_weight: float = 1e-2
    adv_weight: float = 5e-3
    content_weight: float = 1.0
    tv_weight: float = 0.0
    d_lr: float | None = None
    d_updates: int = 1

    def validate(self, where: str) -> None:
        self.discriminator.validate(f"{where}.discriminator")
        for name in ("pixel_weight", "adv_weight", "content_weight", "tv_weight"):
            v = getattr(self, name)
            if not math.isfinite(v) or v < 0:
                raise InvalidParameterError(f"{where}.{name} must be a finite number ≥ 0, got {v}")
        if self.d_lr is not None and not self.d_lr > 0:
            raise InvalidParameterError(f"{where}.d_lr must be > 0 (or null: same as optim.lr)")
        positive_int(self.d_updates, f"{where}.d_updates")


@dataclass
class DistillConfig:
    """Knowledge distillation (:class:`~medsr.training.distill.DistillTask`).

    ``teacher``: a ``.safetensors`` (from :func:`~medsr.training.run.export`) or a ``.ckpt``
    written by medsr training. The student is ``model`` (or, without a ``model`` section, the
    teacher's architecture and kwargs) with ``num_features × width_factor`` and
    ``num_blocks × depth_factor`` (rounded, ≥ 1; features to a multiple of
    ``feature_multiple``). Loss = ``output_weight``·L1(student, teacher) + ``gt_weight``·pixel
    loss to HR + ``feature_weight``·L1 of adapted student features to teacher features.

    ``teacher_ensemble``: the teacher's output is the mean over this many dihedral transforms of
    its input, each turned back (1: one pass; 2: the input and its 180° rotation; 8: every flip
    and 90° rotation — what ``medsr upscale --ensemble`` computes). With the teacher's own
    weights as the student's ``model.init`` this is self-ensemble distillation: one pass learns
    towards the ensemble's output.
    """

    teacher: str = ""
    width_factor: float = 0.5
    depth_factor: float = 0.5
    feature_multiple: int = 1
    output_weight: float = 1.0
    gt_weight: float = 1.0
    feature_weight: float = 0.1
    report_slice_size: int = 256
    teacher_ensemble: int = 1

    def validate(self, where: str) -> None:
        if not self.teacher:
            raise InvalidParameterError(
                f"{where}.teacher is required (a .safetensors or medsr .ckpt)"
            )
        for name in ("width_factor", "depth_factor"):
            v = getattr(self, name)
            if not (math.isfinite(v) and 0 < v <= 4):
                raise InvalidParameterError(f"{where}.{name} must be in (0, 4], got {v}")
        positive_int(self.feature_multiple, f"{where}.feature_multiple")
        for name in ("output_weight", "gt_weight", "feature_weight"):
            v = getattr(self, name)
            if not math.isfinite(v) or v < 0:
                raise InvalidParameterError(f"{where}.{name} must be a finite number ≥ 0, got {v}")
        if self.output_weight == 0 and self.gt_weight == 0:
            raise InvalidParameterError(f"{where}: output_weight and gt_weight cannot both be 0")
        positive_int(self.report_slice_size, f"{where}.report_slice_size")
        if self.teacher_ensemble not in TEACHER_ENSEMBLES:
            raise InvalidParameterError(
                f"{where}.teacher_ensemble must be one of {sorted(TEACHER_ENSEMBLES)}, "
                f"got {self.teacher_ensemble!r}"
            )


#: slice axes of a volume by name (array axes 0, 1, 2)
SLICE_AXES = ("z", "y", "x")


def _default_percentiles() -> list[float]:
    """The interpolators' default normalisation (one definition: :mod:`medsr.interpolation.core`)."""
    from medsr.interpolation.core import DEFAULT_NORMALIZATION

    return [float(DEFAULT_NORMALIZATION["low"]), float(DEFAULT_NORMALIZATION["high"])]


@dataclass
class SliceConfig:
    """``slices``: slice interpolation (``task: slice-interpolation``,
    :class:`~medsr.training.tasks.SliceInterpolationTask`, data from
    :class:`~medsr.training.slices.SliceDataModule`).

    Training samples are triplets of consecutive slices ``(i−1, i, i+1)`` along every axis in
    ``axes`` of each training volume (``z`` only for truly anisotropic data; all three to learn
    from in-plane detail too): the network sees the outer two and predicts the middle one.
    Each volume is normalised on its own: its ``percentiles`` ``[low, high]`` map to 0…1 (the
    model card records it as ``{kind: percentile-per-volume, low, high}``; inference applies the
    same). ``data.max_slices`` keeps a contiguous central slab of that many z slices.
    """

    axes: list[str] = field(default_factory=lambda: list(SLICE_AXES))
    percentiles: list[float] = field(default_factory=lambda: _default_percentiles())

    def validate(self, where: str) -> None:
        self.axes = [str(a).strip().lower() for a in self.axes]
        bad = [a for a in self.axes if a not in SLICE_AXES]
        if not self.axes or bad or len(set(self.axes)) != len(self.axes):
            raise InvalidParameterError(
                f"{where}.axes must list distinct slice axes among z, y, x, got {self.axes!r}"
            )
        if len(self.percentiles) != 2 or not (
            0.0 <= self.percentiles[0] < self.percentiles[1] <= 100.0
        ):
            raise InvalidParameterError(
                f"{where}.percentiles must be [low, high] with 0 ≤ low < high ≤ 100, "
                f"got {self.percentiles!r}"
            )

    def normalization(self) -> dict[str, Any]:
        """The model card's ``normalization`` entry."""
        lo, hi = self.percentiles
        return {"kind": "percentile-per-volume", "low": float(lo), "high": float(hi)}
