"""Training recipes: YAML → validated dataclasses.

A recipe is one YAML file (see ``configs/*.yaml``); every section is optional except
``model`` and ``data.files``. Unknown keys, wrong types and out-of-range values raise
:class:`~medsr.errors.InvalidParameterError` naming the offending key (``data.patch_size must
be a positive integer, got -3``), so a typo never silently falls back to a default.

.. code-block:: yaml

    name: edsr-x2
    task: supervised              # supervised | gan | distill
    scale: 2
    model: {name: edsr, kwargs: {num_features: 64, num_blocks: 16}}
    data:
      files:                      # corpus:NAME, a file path, or a folder (every readable file in it)
        - corpus:CT_small.dcm
        - {path: corpus:anatomical.nii, modality: MR, patient: anat}
      val_files: []               # explicit validation files (otherwise split by file, see below)
      modality_weights: {CT: 1.0, MR: 1.0}
      patch_size: 96              # HR patch side (a multiple of scale)
      patches_per_epoch: 4000
      batch_size: 16
      val_fraction: 0.2
      seed: 0
    normalization:                # per modality code / group, plus "default"
      CT: {kind: fixed, low: -1024, high: 3071}
      default: {kind: minmax}
    degradation: {kind: default}  # or {kind: bicubic, params: {blur_sigma: [0.0, 1.0]}}
    loss: {pixel: l1, ssim_weight: 0.0}
    optim: {name: adam, lr: 2.0e-4, schedule: cosine, warmup_steps: 500}
    trainer: {max_epochs: 100, precision: 32-true, ema_decay: 0.999}

Numbers: PyYAML reads ``1e-3`` (no dot) as a string; float fields accept such strings.

Degradation parameters: a two-element list of numbers is a uniform *range* ``(low, high)``
(integers at both ends: a uniform integer), ``{choices: [...]}`` picks one value per sample,
anything else is a fixed value — the semantics of :func:`medsr.degradations._common.sample_value`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from medsr.errors import InvalidParameterError

__all__ = [
    "Config",
    "DataConfig",
    "DegradationConfig",
    "DistillConfig",
    "FileEntry",
    "GanConfig",
    "LossConfig",
    "ModelConfig",
    "NormSpec",
    "OptimConfig",
    "TrainerConfig",
    "config_from_dict",
    "load_config",
    "parse_max_time",
]

#: modality groups of :data:`medsr.degradations.compose.MODALITY_GROUPS` plus the fallback.
MODALITY_GROUP_NAMES = ("CT", "MR", "radiograph", "US", "NM", "default")


@dataclass
class ModelConfig:
    """The network that is trained and exported: a registry name and constructor kwargs.

    ``scale`` comes from the top-level ``scale`` and ``in_channels`` is 1 (luminance); do
    not repeat them in ``kwargs``. ``init``: start from trained weights (an exported
    ``.safetensors`` or a medsr ``.ckpt`` of the same architecture) — every tensor whose name and
    shape match is loaded, so a ×2 network can start a ×4 one (only the upsampler is new) or
    a shipped default can be fine-tuned on new data; the optimiser and schedule start afresh.
    """

    name: str = ""
    kwargs: dict[str, Any] = field(default_factory=dict)
    init: str | None = None

    def validate(self, where: str) -> None:
        if not self.name:
            raise InvalidParameterError(f"{where}.name is required (a registered model name)")
        for key in ("scale", "in_channels"):
            if key in self.kwargs:
                raise InvalidParameterError(
                    f"{where}.kwargs.{key} is set by medsr (scale from the top-level 'scale', "
                    "in_channels=1 for luminance); remove it"
                )


@dataclass
class FileEntry:
    """One training source: ``path`` (``corpus:NAME``, a file, or a DICOM-series/any folder).

    ``modality`` overrides the one in the file (NIfTI/PNG carry none: they read as ``OT``);
    ``patient`` groups files of the same patient so the train/validation split keeps them
    together (default: each file is its own patient).
    """

    path: str = ""
    modality: str | None = None
    patient: str | None = None

    def validate(self, where: str) -> None:
        if not self.path:
            raise InvalidParameterError(f"{where}.path is required")
        if self.modality is not None:
            self.modality = self.modality.strip().upper()


@dataclass
class DataConfig:
    """Where HR images come from and how patches are drawn (see :mod:`medsr.training.data`)."""

    files: list[FileEntry] = field(default_factory=list)
    val_files: list[FileEntry] = field(default_factory=list)
    modality_weights: dict[str, float] = field(default_factory=dict)
    patch_size: int = 64
    patches_per_epoch: int = 2000
    batch_size: int = 16
    val_fraction: float = 0.2
    val_slices_per_file: int = 4
    val_max_size: int = 256
    min_patch_std: float = 0.01
    augment: bool = True
    num_workers: int = 0
    seed: int = 0

    def validate(self, where: str) -> None:
        if not self.files:
            raise InvalidParameterError(f"{where}.files must list at least one training file")
        for i, e in enumerate(self.files):
            e.validate(f"{where}.files[{i}]")
        for i, e in enumerate(self.val_files):
            e.validate(f"{where}.val_files[{i}]")
        _positive_int(self.patch_size, f"{where}.patch_size")
        _positive_int(self.patches_per_epoch, f"{where}.patches_per_epoch")
        _positive_int(self.batch_size, f"{where}.batch_size")
        _positive_int(self.val_slices_per_file, f"{where}.val_slices_per_file")
        _positive_int(self.val_max_size, f"{where}.val_max_size")
        if self.num_workers < 0:
            raise InvalidParameterError(f"{where}.num_workers must be ≥ 0, got {self.num_workers}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise InvalidParameterError(
                f"{where}.val_fraction must be in [0, 1), got {self.val_fraction}"
            )
        if self.min_patch_std < 0:
            raise InvalidParameterError(
                f"{where}.min_patch_std must be ≥ 0, got {self.min_patch_std}"
            )
        from medsr.degradations.compose import modality_group

        groups: dict[str, float] = {}
        for key, w in list(self.modality_weights.items()):
            if not math.isfinite(w) or w < 0:
                raise InvalidParameterError(
                    f"{where}.modality_weights.{key} must be a finite number ≥ 0, got {w}"
                )
            group = key if key in MODALITY_GROUP_NAMES else modality_group(key)
            if group in groups and groups[group] != w:
                raise InvalidParameterError(
                    f"{where}.modality_weights gives two different weights to the modality group "
                    f"{group!r} (via {key!r}); give one weight per group ({', '.join(MODALITY_GROUP_NAMES)})"
                )
            groups[group] = w
        self.modality_weights = groups


@dataclass
class NormSpec:
    """Intensity normalisation to model space (recorded in the model card).

    ``fixed``: ``(v − low) / (high − low)`` (CT: HU −1024…3071); ``minmax``: the image's own
    min/max map to 0…1 (per file: a whole volume shares one min/max, as at inference).
    """

    kind: Literal["fixed", "minmax"] = "minmax"
    low: float | None = None
    high: float | None = None

    def validate(self, where: str) -> None:
        if self.kind == "fixed":
            if self.low is None or self.high is None:
                raise InvalidParameterError(f"{where}: kind 'fixed' needs 'low' and 'high'")
            if not self.high > self.low:
                raise InvalidParameterError(
                    f"{where}: 'high' ({self.high}) must be greater than 'low' ({self.low})"
                )
        elif self.low is not None or self.high is not None:
            raise InvalidParameterError(f"{where}: 'low'/'high' only apply to kind 'fixed'")

    def card(self) -> dict[str, Any]:
        if self.kind == "fixed":
            return {"kind": "fixed", "low": float(self.low), "high": float(self.high)}  # type: ignore[arg-type]
        return {"kind": "minmax"}


def _default_normalization() -> dict[str, NormSpec]:
    return {"CT": NormSpec("fixed", -1024.0, 3071.0), "default": NormSpec("minmax")}


@dataclass
class DegradationConfig:
    """How LR inputs are made from HR patches (in normalised model space).

    ``kind: default`` — :func:`medsr.degradations.default_degradation` for each patch's
    modality, or with ``params.bicubic_fraction: p`` plain antialiased bicubic for a fraction
    ``p`` of the patches and the modality's pipeline for the rest (one blind model for both); ``kind: compose`` — ``steps`` (each a ``{kind, params}``) applied in order;
    any other registered kind with ``params``. ``scale`` is passed to kinds whose first
    argument is ``scale`` (not to noise models) unless ``params`` sets it.
    """

    kind: str = "default"
    params: dict[str, Any] = field(default_factory=dict)
    steps: list[DegradationConfig] = field(default_factory=list)

    def validate(self, where: str) -> None:
        from medsr.degradations import list_degradations

        self.kind = self.kind.strip().lower()
        known = list_degradations()
        if self.kind not in known:
            raise InvalidParameterError(
                f"{where}.kind: unknown degradation {self.kind!r}; choose one of: {', '.join(known)}"
            )
        if self.kind == "default":
            extra = set(self.params) - {"bicubic_fraction"}
            if extra or self.steps:
                raise InvalidParameterError(
                    f"{where}: kind 'default' takes only params.bicubic_fraction (no steps)"
                )
            frac = self.params.get("bicubic_fraction", 0.0)
            if not isinstance(frac, (int, float)) or not 0.0 <= float(frac) <= 1.0:
                raise InvalidParameterError(
                    f"{where}.params.bicubic_fraction must be a number in [0, 1], got {frac!r}"
                )
        if self.kind == "compose":
            if not self.steps:
                raise InvalidParameterError(f"{where}: kind 'compose' needs a list of 'steps'")
            if self.params:
                raise InvalidParameterError(f"{where}: kind 'compose' takes 'steps', not 'params'")
            for i, s in enumerate(self.steps):
                s.validate(f"{where}.steps[{i}]")
                if s.kind in ("default", "compose"):
                    raise InvalidParameterError(f"{where}.steps[{i}]: {s.kind!r} cannot be a step")
        elif self.steps:
            raise InvalidParameterError(f"{where}: 'steps' only apply to kind 'compose'")

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


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
        _positive_int(self.step_size, f"{where}.step_size")
        if not 0.0 < self.gamma <= 1.0:
            raise InvalidParameterError(f"{where}.gamma must be in (0, 1]")
        if self.total_steps is not None:
            _positive_int(self.total_steps, f"{where}.total_steps")


@dataclass
class TrainerConfig:
    """Lightning Trainer settings (see :func:`medsr.training.run.train`)."""

    max_epochs: int = 100
    max_steps: int = -1
    max_time: str | None = None
    precision: str = "32-true"
    gradient_clip_val: float | None = None
    ema_decay: float | None = None
    accelerator: str = "auto"
    devices: int | str = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    log_every_n_steps: int = 50
    check_val_every_n_epoch: int = 1
    image_log_every_n_epochs: int = 5
    progress_bar: Literal["rich", "tqdm", "none"] = "rich"
    seed: int = 0
    out_dir: str | None = None

    def validate(self, where: str) -> None:
        if self.max_epochs < -1 or self.max_epochs == 0:
            raise InvalidParameterError(f"{where}.max_epochs must be ≥ 1 (or -1 for no limit)")
        if self.max_steps < -1 or self.max_steps == 0:
            raise InvalidParameterError(f"{where}.max_steps must be ≥ 1 (or -1 for no limit)")
        if self.max_time is not None:
            parse_max_time(self.max_time, f"{where}.max_time")
        if self.max_epochs == -1 and self.max_steps == -1 and self.max_time is None:
            raise InvalidParameterError(
                f"{where}: set at least one of max_epochs, max_steps or max_time, or training never ends"
            )
        allowed = ("32-true", "32", "16-mixed", "bf16-mixed", "bf16-true", "16-true", "64-true")
        self.precision = str(self.precision)
        if self.precision not in allowed:
            raise InvalidParameterError(f"{where}.precision must be one of {', '.join(allowed)}")
        if self.gradient_clip_val is not None and not self.gradient_clip_val > 0:
            raise InvalidParameterError(f"{where}.gradient_clip_val must be > 0 (or null)")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise InvalidParameterError(f"{where}.ema_decay must be in (0, 1) (e.g. 0.999) or null")
        _positive_int(self.num_nodes, f"{where}.num_nodes")
        _positive_int(self.log_every_n_steps, f"{where}.log_every_n_steps")
        _positive_int(self.check_val_every_n_epoch, f"{where}.check_val_every_n_epoch")
        if self.image_log_every_n_epochs < 0:
            raise InvalidParameterError(f"{where}.image_log_every_n_epochs must be ≥ 0 (0: never)")
        self.devices = parse_devices(self.devices, f"{where}.devices")


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
        _positive_int(self.d_updates, f"{where}.d_updates")


@dataclass
class DistillConfig:
    """Knowledge distillation (:class:`~medsr.training.distill.DistillTask`).

    ``teacher``: a ``.safetensors`` (from :func:`~medsr.training.run.export`) or a ``.ckpt``
    written by medsr training. The student is ``model`` (or, without a ``model`` section, the
    teacher's architecture and kwargs) with ``num_features × width_factor`` and
    ``num_blocks × depth_factor`` (rounded, ≥ 1; features to a multiple of
    ``feature_multiple``). Loss = ``output_weight``·L1(student, teacher) + ``gt_weight``·pixel
    loss to HR + ``feature_weight``·L1 of adapted student features to teacher features.
    """

    teacher: str = ""
    width_factor: float = 0.5
    depth_factor: float = 0.5
    feature_multiple: int = 1
    output_weight: float = 1.0
    gt_weight: float = 1.0
    feature_weight: float = 0.1
    report_slice_size: int = 256

    def validate(self, where: str) -> None:
        if not self.teacher:
            raise InvalidParameterError(
                f"{where}.teacher is required (a .safetensors or medsr .ckpt)"
            )
        for name in ("width_factor", "depth_factor"):
            v = getattr(self, name)
            if not (math.isfinite(v) and 0 < v <= 4):
                raise InvalidParameterError(f"{where}.{name} must be in (0, 4], got {v}")
        _positive_int(self.feature_multiple, f"{where}.feature_multiple")
        for name in ("output_weight", "gt_weight", "feature_weight"):
            v = getattr(self, name)
            if not math.isfinite(v) or v < 0:
                raise InvalidParameterError(f"{where}.{name} must be a finite number ≥ 0, got {v}")
        if self.output_weight == 0 and self.gt_weight == 0:
            raise InvalidParameterError(f"{where}: output_weight and gt_weight cannot both be 0")
        _positive_int(self.report_slice_size, f"{where}.report_slice_size")


@dataclass
class Config:
    """A whole training recipe. Build with :func:`load_config` or :func:`config_from_dict`."""

    name: str = "medsr"
    task: Literal["supervised", "gan", "distill"] = "supervised"
    scale: int = 2
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    normalization: dict[str, NormSpec] = field(default_factory=_default_normalization)
    degradation: DegradationConfig = field(default_factory=DegradationConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    gan: GanConfig | None = None
    distill: DistillConfig | None = None
    #: where the recipe came from (not part of the YAML)
    source: str | None = None

    def validate(self) -> Config:
        if self.scale not in (2, 3, 4):
            raise InvalidParameterError(f"scale must be 2, 3 or 4, got {self.scale}")
        if self.task == "distill":
            if self.distill is None:
                raise InvalidParameterError(
                    "task 'distill' needs a 'distill' section (teacher: ...)"
                )
            self.distill.validate("distill")
            if self.model.name:
                self.model.validate("model")
        else:
            self.model.validate("model")
        if self.task == "gan":
            if self.gan is None:
                self.gan = GanConfig()
            self.gan.validate("gan")
        elif self.gan is not None:
            raise InvalidParameterError(f"a 'gan' section needs task: gan (task is {self.task!r})")
        if self.task != "distill" and self.distill is not None:
            raise InvalidParameterError(
                f"a 'distill' section needs task: distill (task is {self.task!r})"
            )
        self.data.validate("data")
        if self.data.patch_size % self.scale:
            raise InvalidParameterError(
                f"data.patch_size ({self.data.patch_size}) must be a multiple of scale ({self.scale})"
            )
        if self.data.patch_size // self.scale < 4:
            raise InvalidParameterError(
                f"data.patch_size ({self.data.patch_size}) gives LR patches smaller than 4 px"
            )
        if "default" not in self.normalization:
            raise InvalidParameterError(
                "normalization needs a 'default' entry (used for modalities not listed)"
            )
        for key, spec in self.normalization.items():
            spec.validate(f"normalization.{key}")
        self.degradation.validate("degradation")
        self.loss.validate("loss")
        self.optim.validate("optim")
        self.trainer.validate("trainer")
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain (YAML/JSON/checkpoint-safe) dict; ``config_from_dict`` inverts it."""
        d = dataclasses.asdict(self)
        d.pop("source", None)
        return d

    def replace(self, **changes: Any) -> Config:
        """A validated copy with top-level fields replaced."""
        return config_from_dict({**self.to_dict(), **_plain(changes)}, source=self.source)


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    return obj


# --------------------------------------------------------------------------- helpers
def _positive_int(v: Any, where: str) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise InvalidParameterError(f"{where} must be a positive integer, got {v!r}")


def parse_max_time(value: Any, where: str = "max_time") -> Any:
    """``"HH:MM:SS"`` or ``"DD:HH:MM:SS"`` → :class:`datetime.timedelta` (``None`` passes)."""
    import datetime

    if value is None:
        return None
    if isinstance(value, datetime.timedelta):
        return value
    parts = str(value).strip().split(":")
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        nums = []
    if len(nums) not in (3, 4) or any(n < 0 for n in nums):
        raise InvalidParameterError(
            f"{where} must look like HH:MM:SS or DD:HH:MM:SS, got {value!r}"
        )
    if len(nums) == 3:
        nums = [0, *nums]
    d, h, m, s = nums
    if m > 59 or s > 59:
        raise InvalidParameterError(f"{where}: minutes and seconds must be < 60, got {value!r}")
    td = datetime.timedelta(days=d, hours=h, minutes=m, seconds=s)
    if td.total_seconds() <= 0:
        raise InvalidParameterError(f"{where} must be longer than zero, got {value!r}")
    return td


def parse_devices(value: Any, where: str = "devices") -> int | str:
    """``auto``, a count (``2``) or a device list (``"0,1"``) as Lightning expects."""
    if isinstance(value, bool):
        raise InvalidParameterError(f"{where} must be 'auto', a count or a list like '0,1'")
    if isinstance(value, int):
        if value < 1 and value != -1:
            raise InvalidParameterError(f"{where} must be ≥ 1 (or -1 for all), got {value}")
        return value
    s = str(value).strip()
    if s == "auto":
        return s
    try:
        return parse_devices(int(s), where)
    except ValueError:
        pass
    items = [p.strip() for p in s.split(",") if p.strip()]
    if items and all(p.isdigit() for p in items):
        return ",".join(items) + ("," if len(items) == 1 else "")
    raise InvalidParameterError(
        f"{where} must be 'auto', a count or a list like '0,1', got {value!r}"
    )


_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _describe_type(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp in _TYPE_NAMES:
        return _TYPE_NAMES[tp]
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        return "a list"
    if origin is dict or tp is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(
            _describe_type(a) if a is not type(None) else "null" for a in typing.get_args(tp)
        )
    return str(tp)


def _convert(value: Any, tp: Any, where: str) -> Any:
    """Check/convert a YAML value to the annotated type, or raise a clear error."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise InvalidParameterError(f"{where} must be {_describe_type(tp)}, got null")
        members = [a for a in args if a is not type(None)]
        if len(members) == 1:  # Optional[X]: X's own, more precise error
            return _convert(value, members[0], where)
        for a in members:
            try:
                return _convert(value, a, where)
            except InvalidParameterError:
                continue
        raise InvalidParameterError(f"{where} must be {_describe_type(tp)}, got {value!r}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        v = value.strip().lower() if isinstance(value, str) else value
        if v not in allowed:
            raise InvalidParameterError(
                f"{where} must be one of {', '.join(repr(a) for a in allowed)}, got {value!r}"
            )
        return v
    if dataclasses.is_dataclass(tp):
        if isinstance(value, str) and tp is FileEntry:
            return FileEntry(path=value)
        if isinstance(value, str) and tp is ModelConfig:
            return ModelConfig(name=value)
        if isinstance(value, str) and tp is NormSpec:
            return _build(tp, {"kind": value}, where)
        return _build(tp, value, where)
    if origin is list:
        (item,) = typing.get_args(tp)
        if value is None:
            return []
        if not isinstance(value, (list, tuple)):
            if item is FileEntry:
                value = [value]
            else:
                raise InvalidParameterError(f"{where} must be a list, got {value!r}")
        return [_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        _kt, vt = typing.get_args(tp)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise InvalidParameterError(f"{where} must be a mapping, got {value!r}")
        return {str(k): _convert(v, vt, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise InvalidParameterError(f"{where} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool):
            raise InvalidParameterError(f"{where} must be an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                f = float(value.replace("_", ""))
            except ValueError:
                f = math.nan
            if math.isfinite(f) and f.is_integer():
                return int(f)
        raise InvalidParameterError(f"{where} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise InvalidParameterError(f"{where} must be a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise InvalidParameterError(f"{where} must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise InvalidParameterError(f"{where} must be a string, got {value!r}")
    return value


def _build(cls: type, data: Any, where: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InvalidParameterError(f"{where or 'the config'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.name != "source"]
    unknown = sorted(set(map(str, data)) - set(names))
    if unknown:
        prefix = f"{where}." if where else ""
        raise InvalidParameterError(
            f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(prefix + u for u in unknown)} "
            f"(allowed{' in ' + where if where else ''}: {', '.join(names)})"
        )
    kwargs = {}
    for name in names:
        if name in data:
            sub = f"{where}.{name}" if where else name
            kwargs[name] = _convert(data[name], hints[name], sub)
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any], *, source: str | None = None) -> Config:
    """Validate a recipe given as a dict (the parsed YAML); raise InvalidParameterError if bad."""
    if not isinstance(data, dict):
        raise InvalidParameterError(
            f"a training config must be a mapping, got {type(data).__name__}"
        )
    data = dict(data)
    norm = data.get("normalization")
    if isinstance(norm, dict) and "kind" in norm:  # a single spec for every modality
        data["normalization"] = {"default": norm}
    elif isinstance(norm, str):
        data["normalization"] = {"default": {"kind": norm}}
    if isinstance(data.get("degradation"), str):
        data["degradation"] = {"kind": data["degradation"]}
    cfg = _build(Config, data, "")
    cfg.source = source
    if cfg.normalization:
        cfg.normalization = {
            (k if k in MODALITY_GROUP_NAMES else k.upper()): v for k, v in cfg.normalization.items()
        }
    return cfg.validate()


def load_config(path: str | os.PathLike[str] | Config) -> Config:
    """Read and validate a YAML recipe (a :class:`Config` is returned as is)."""
    if isinstance(path, Config):
        return path
    import yaml

    p = Path(path)
    if not p.is_file():
        raise InvalidParameterError(f"training config '{p}' does not exist")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise InvalidParameterError(f"'{p.name}' is not valid YAML: {str(exc)[:300]}") from None
    if data is None:
        raise InvalidParameterError(f"training config '{p.name}' is empty")
    cfg = config_from_dict(data, source=str(p))
    if cfg.name == "medsr" and "name" not in data:
        cfg.name = p.stem
    return cfg
