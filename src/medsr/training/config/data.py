"""``data`` and ``normalization`` sections: training sources, patch sampling, intensity scaling."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from medsr.errors import InvalidParameterError
from medsr.training.config._checks import positive_int

#: modality groups of :data:`medsr.degradations.compose.MODALITY_GROUPS` plus the fallback.
MODALITY_GROUP_NAMES = ("CT", "MR", "radiograph", "US", "NM", "default")


@dataclass
class FileEntry:
    """One training source: ``path`` (``corpus:NAME``, a file, or a DICOM-series/any folder).

    ``modality`` overrides the one in the file (NIfTI/PNG carry none: they read as ``OT``);
    ``patient`` groups files of the same patient so the train/validation split keeps them
    together (default: each file is its own patient). ``max_slices``: keep at most this many
    slices of a volume, evenly spaced over its central 80 % (large volumes such as a 0.5 mm
    brain are then held in memory as a handful of slices; normalisation still uses the whole
    file's range, as at inference).
    """

    path: str = ""
    modality: str | None = None
    patient: str | None = None
    max_slices: int | None = None

    def validate(self, where: str) -> None:
        if not self.path:
            raise InvalidParameterError(f"{where}.path is required")
        if self.modality is not None:
            self.modality = self.modality.strip().upper()
        if self.max_slices is not None:
            positive_int(self.max_slices, f"{where}.max_slices")


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
    #: HR pixels of context drawn on each side of a training patch, degraded with it and cut
    #: away after (a multiple of scale): the LR patch then carries the degradation as a whole
    #: image gets it, without the wrap-around (k-space) or border effects of degrading the patch
    #: alone. 0: the patch is degraded on its own.
    patch_margin: int = 0
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
        positive_int(self.patch_size, f"{where}.patch_size")
        positive_int(self.patches_per_epoch, f"{where}.patches_per_epoch")
        positive_int(self.batch_size, f"{where}.batch_size")
        positive_int(self.val_slices_per_file, f"{where}.val_slices_per_file")
        positive_int(self.val_max_size, f"{where}.val_max_size")
        if self.num_workers < 0:
            raise InvalidParameterError(f"{where}.num_workers must be ≥ 0, got {self.num_workers}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise InvalidParameterError(
                f"{where}.val_fraction must be in [0, 1), got {self.val_fraction}"
            )
        if self.patch_margin < 0:
            raise InvalidParameterError(
                f"{where}.patch_margin must be ≥ 0, got {self.patch_margin}"
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


def default_normalization() -> dict[str, NormSpec]:
    return {"CT": NormSpec("fixed", -1024.0, 3071.0), "default": NormSpec("minmax")}
