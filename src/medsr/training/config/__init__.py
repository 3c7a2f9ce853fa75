"""Training recipes: YAML → validated dataclasses.

A recipe is one YAML file (see ``configs/*.yaml``); every section is optional except
``model`` and ``data.files``. Unknown keys, wrong types and out-of-range values raise
:class:`~medsr.errors.InvalidParameterError` naming the offending key (``data.patch_size must
be a positive integer, got -3``), so a typo never silently falls back to a default.

.. code-block:: yaml

    name: edsr-x2
    task: supervised              # supervised | gan | distill | slice-interpolation
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
    card:                         # words for the exported model card (optional; defaults say
      intended_use: research only # research use only, what it was trained on and for)
      limitations: [trained on one scanner]

Slice interpolation (``task: slice-interpolation``, :class:`SliceConfig`, ``configs/interp-*.yaml``)
uses the same sections — ``model`` (a ``slice-interpolator``: interp-cnn, interp-gan,
fast-ddpm), ``data`` (volumes), ``loss``, ``optim``, ``trainer`` and, for the adversarial
interpolator, ``gan`` — plus ``slices`` (slice axes, normalisation percentiles); ``scale`` is 2
(one slice between two), and ``normalization``/``degradation`` do not apply (each volume is
normalised by its own percentiles; the "degradation" is removing the middle slice).

Numbers: PyYAML reads ``1e-3`` (no dot) as a string; float fields accept such strings.

Degradation parameters: a two-element list of numbers is a uniform *range* ``(low, high)``
(integers at both ends: a uniform integer), ``{choices: [...]}`` picks one value per sample,
anything else is a fixed value — the semantics of :func:`medsr.degradations._common.sample_value`.

The schema lives in one module per concern: :mod:`.model`, :mod:`.data` (``data`` and
``normalization``), :mod:`.degradation`, :mod:`.optim` (``loss`` and ``optim``), :mod:`.trainer`,
:mod:`.task_sections` (``gan``, ``distill``, ``slices``), :mod:`.card` (``card``), :mod:`.schema` (YAML values → typed
dataclasses) and :mod:`.recipe` (:class:`Config`, :func:`config_from_dict`, :func:`load_config`).
Import from here: ``from medsr.training.config import Config, load_config``.
"""

from __future__ import annotations

from medsr.training.config.card import CardConfig
from medsr.training.config.data import MODALITY_GROUP_NAMES, DataConfig, FileEntry, NormSpec
from medsr.training.config.degradation import (
    HR_NOISE_GROUPS,
    DegradationConfig,
    HRBlurConfig,
    HRNoiseConfig,
)
from medsr.training.config.model import LowBandConfig, ModelConfig
from medsr.training.config.optim import LossConfig, OptimConfig
from medsr.training.config.recipe import (
    RESUME_MAY_CHANGE,
    Config,
    config_from_dict,
    load_config,
    recipe_changes,
)
from medsr.training.config.task_sections import SLICE_AXES, DistillConfig, GanConfig, SliceConfig
from medsr.training.config.trainer import TrainerConfig, parse_devices, parse_max_time

__all__ = [
    "HR_NOISE_GROUPS",
    "MODALITY_GROUP_NAMES",
    "RESUME_MAY_CHANGE",
    "SLICE_AXES",
    "CardConfig",
    "Config",
    "DataConfig",
    "DegradationConfig",
    "DistillConfig",
    "FileEntry",
    "GanConfig",
    "HRBlurConfig",
    "HRNoiseConfig",
    "LossConfig",
    "LowBandConfig",
    "ModelConfig",
    "NormSpec",
    "OptimConfig",
    "SliceConfig",
    "TrainerConfig",
    "config_from_dict",
    "load_config",
    "parse_devices",
    "parse_max_time",
    "recipe_changes",
]
