"""Training, fine-tuning (GAN) and distillation with PyTorch Lightning.

* :func:`train` / :func:`export` (:mod:`medsr.training.run`) — recipe → checkpoints →
  safetensors with a model card;
* :func:`load_config` / :class:`Config` (:mod:`medsr.training.config`) — YAML recipes;
* :class:`SRDataModule` (:mod:`medsr.training.data`) — patches, split by patient, LR on the fly;
* :class:`SupervisedSR`, :class:`SRGANTask` (:mod:`medsr.training.tasks`),
  :class:`DistillTask` (:mod:`medsr.training.distill`) — the LightningModules;
* :mod:`medsr.training.losses` — pixel, SSIM, TV, adversarial and feature losses.

Attributes are imported on first use, so ``import medsr.training`` does not load Lightning.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "train": "medsr.training.run",
    "export": "medsr.training.run",
    "TrainResult": "medsr.training.run",
    "Config": "medsr.training.config",
    "load_config": "medsr.training.config",
    "config_from_dict": "medsr.training.config",
    "SRDataModule": "medsr.training.data",
    "resolve_corpus": "medsr.training.data",
    "SupervisedSR": "medsr.training.tasks",
    "SRGANTask": "medsr.training.tasks",
    "build_task": "medsr.training.factory",
    "build_datamodule": "medsr.training.factory",
    "DistillTask": "medsr.training.distill",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'medsr.training' has no attribute {name!r}")
