"""The whole recipe (:class:`Config`): cross-section validation per task, and loading it from a
dict or a YAML file."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from medsr.errors import InvalidParameterError
from medsr.training.config.card import CardConfig
from medsr.training.config.data import (
    MODALITY_GROUP_NAMES,
    DataConfig,
    NormSpec,
    default_normalization,
)
from medsr.training.config.degradation import DegradationConfig
from medsr.training.config.model import ModelConfig
from medsr.training.config.optim import LossConfig, OptimConfig
from medsr.training.config.schema import build_dataclass
from medsr.training.config.task_sections import DistillConfig, GanConfig, SliceConfig
from medsr.training.config.trainer import TrainerConfig


@dataclass
class Config:
    """A whole training recipe. Build with :func:`load_config` or :func:`config_from_dict`."""

    name: str = "medsr"
    task: Literal["supervised", "gan", "distill", "slice-interpolation", "through-plane"] = (
        "supervised"
    )
    scale: int = 2
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    normalization: dict[str, NormSpec] = field(default_factory=default_normalization)
    degradation: DegradationConfig = field(default_factory=DegradationConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    gan: GanConfig | None = None
    distill: DistillConfig | None = None
    slices: SliceConfig | None = None
    #: the exported model card's words (summary, intended use, limitations)
    card: CardConfig = field(default_factory=CardConfig)
    #: where the recipe came from (not part of the YAML)
    source: str | None = None

    def validate(self) -> Config:
        self.card.validate("card")
        if self.task == "slice-interpolation":
            return self._validate_slice_interpolation()
        if self.slices is not None:
            raise InvalidParameterError(
                f"a 'slices' section needs task: slice-interpolation (task is {self.task!r})"
            )
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
        if self.task == "through-plane" and self.model.low_band is not None:
            raise InvalidParameterError(
                f"model.low_band is supported for task supervised, gan and distill, not {self.task}"
            )
        if self.model.data_consistency is not None and (
            self.task == "through-plane" or self.degradation.kind != self.model.data_consistency
        ):
            raise InvalidParameterError(
                f"model.data_consistency: {self.model.data_consistency} needs in-plane training data "
                f"made by that measurement (degradation.kind: {self.model.data_consistency}); "
                f"task is {self.task!r}, degradation.kind {self.degradation.kind!r}"
            )
        if self.task == "through-plane" and self.degradation.kind not in ("thick-slice", "compose"):
            raise InvalidParameterError(
                "task through-plane degrades one axis: set degradation.kind: thick-slice "
                "(params: axis: -2, profile, thickness)"
            )
        if self.task != "distill" and self.distill is not None:
            raise InvalidParameterError(
                f"a 'distill' section needs task: distill (task is {self.task!r})"
            )
        self.data.validate("data")
        if self.data.patch_size % self.scale:
            raise InvalidParameterError(
                f"data.patch_size ({self.data.patch_size}) must be a multiple of scale ({self.scale})"
            )
        if self.data.patch_margin % self.scale:
            raise InvalidParameterError(
                f"data.patch_margin ({self.data.patch_margin}) must be a multiple of scale ({self.scale})"
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

    def _validate_slice_interpolation(self) -> Config:
        """``task: slice-interpolation``: the sections that apply, and no silent leftovers."""
        if self.scale != 2:
            raise InvalidParameterError(
                f"scale must be 2 for task slice-interpolation (a slice interpolator predicts the "
                f"one slice between two; ×4 is applied as repeated passes), got {self.scale}"
            )
        self.model.validate("model")
        if self.model.low_band is not None or self.model.data_consistency is not None:
            raise InvalidParameterError(
                "model.low_band and model.data_consistency apply to in-plane tasks, not "
                "slice-interpolation"
            )
        if self.distill is not None:
            raise InvalidParameterError(
                "a 'distill' section needs task: distill (task is 'slice-interpolation')"
            )
        if {k: v.card() for k, v in self.normalization.items()} != {
            k: v.card() for k, v in default_normalization().items()
        }:
            raise InvalidParameterError(
                "normalization does not apply to task slice-interpolation: each volume is "
                "normalised by its own percentiles (set slices.percentiles)"
            )
        if self.degradation.as_dict() != DegradationConfig().as_dict():
            raise InvalidParameterError(
                "degradation does not apply to task slice-interpolation (the input is the two "
                "neighbours of the slice to predict)"
            )
        if self.slices is None:
            self.slices = SliceConfig()
        self.slices.validate("slices")
        self.data.validate("data")
        if self.data.modality_weights:
            raise InvalidParameterError(
                "data.modality_weights does not apply to task slice-interpolation (triplets are "
                "drawn in proportion to each volume's slices)"
            )
        if self.data.patch_size < 8:
            raise InvalidParameterError(
                f"data.patch_size must be at least 8 for slice interpolation, got {self.data.patch_size}"
            )
        if self.gan is not None:
            self.gan.validate("gan")
        self.loss.validate("loss")
        self.optim.validate("optim")
        self.trainer.validate("trainer")
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain (YAML/JSON/checkpoint-safe) dict; ``config_from_dict`` inverts it."""
        d = dataclasses.asdict(self)
        d.pop("source", None)
        if d.get("slices") is None:  # only slice-interpolation recipes carry the section
            d.pop("slices", None)
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
    cfg = build_dataclass(Config, data, "")
    cfg.source = source
    if cfg.normalization:
        cfg.normalization = {
            (k if k in MODALITY_GROUP_NAMES else k.upper()): v for k, v in cfg.normalization.items()
        }
    return cfg.validate()


#: recipe keys a resumed run may change: how long it runs, on what hardware, what it logs and
#: where, and what the model card says in words (everything else — data, model, degradation,
#: loss, optimiser, seeds — is the run's own)
RESUME_MAY_CHANGE = frozenset(
    {
        "name",
        "data.num_workers",
        "trainer.max_epochs",
        "trainer.max_steps",
        "trainer.max_time",
        "trainer.precision",
        "trainer.accelerator",
        "trainer.devices",
        "trainer.num_nodes",
        "trainer.strategy",
        "trainer.log_every_n_steps",
        "trainer.check_val_every_n_epoch",
        "trainer.image_log_every_n_epochs",
        "trainer.progress_bar",
        "trainer.out_dir",
        "card.summary",
        "card.intended_use",
        "card.limitations",
        "card.out_of_scope",
    }
)


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict) and d:
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix.removesuffix("."): list(d) if isinstance(d, tuple) else d}


def recipe_changes(
    saved: dict[str, Any], cfg: Config, *, keys: Collection[str] | None = None
) -> list[str]:
    """``"key: <saved> there, <cfg's> here"`` for every recipe value in which ``cfg`` differs
    from ``saved`` (the recipe a checkpoint was trained with), the keys a resumed run may change
    (:data:`RESUME_MAY_CHANGE`) left out — or, with ``keys``, for those keys only (e.g. how long
    the run goes: ``trainer.max_epochs``)."""
    try:  # both through the same validation, so defaults and spellings compare alike
        old = config_from_dict(saved).to_dict()
    except InvalidParameterError:
        old = dict(saved)
    before, after = _flat(old), _flat(cfg.to_dict())
    unset = "(unset)"
    return [
        f"{key}: {before.get(key, unset)!r} there, {after.get(key, unset)!r} here"
        for key in sorted(set(before) | set(after))
        if (key in keys if keys is not None else key not in RESUME_MAY_CHANGE)
        and before.get(key, unset) != after.get(key, unset)
    ]


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
