"""Which LightningModule and LightningDataModule a recipe's ``task`` trains with.

Kept apart from :mod:`medsr.training.tasks` so that the task modules (supervised/GAN in
``tasks``, distillation in ``distill``, slice interpolation) never import each other in a cycle.
"""

from __future__ import annotations

import lightning as L

from medsr.errors import InvalidParameterError
from medsr.training.config import Config
from medsr.training.tasks import (
    SliceInterpolationTask,
    SRGANTask,
    SRTask,
    SupervisedSR,
    ThroughPlaneSR,
)

__all__ = ["build_datamodule", "build_task"]


def build_task(config: Config) -> SRTask:
    """The LightningModule for ``config.task``."""
    if config.task == "supervised":
        return SupervisedSR(config)
    if config.task == "gan":
        return SRGANTask(config)
    if config.task == "distill":
        from medsr.training.distill import DistillTask

        return DistillTask(config)
    if config.task == "slice-interpolation":
        return SliceInterpolationTask(config)
    if config.task == "through-plane":
        return ThroughPlaneSR(config)
    raise InvalidParameterError(f"unknown task {config.task!r}")


def build_datamodule(config: Config) -> L.LightningDataModule:
    """The LightningDataModule for ``config.task``: patches for in-plane and through-plane
    tasks (:class:`~medsr.training.data.SRDataModule`; one axis degraded for through-plane),
    triplets for slice interpolation
    (:class:`~medsr.training.slices.SliceDataModule`)."""
    if config.task == "slice-interpolation":
        from medsr.training.slices import SliceDataModule

        return SliceDataModule(config)
    from medsr.training.data import SRDataModule

    return SRDataModule(config)
