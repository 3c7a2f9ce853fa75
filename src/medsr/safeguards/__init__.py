"""Fidelity safeguards: how far a super-resolved image can be trusted.

* :mod:`~medsr.safeguards.operators` — the assumed measurement model and its projection;
* :mod:`~medsr.safeguards.consistency` — ``|degrade(SR) − LR|`` and data-consistency projection;
* :mod:`~medsr.safeguards.maps` — test-time-augmentation uncertainty, map summaries, writing;
* :mod:`~medsr.safeguards.ood` — out-of-distribution check against the model card;
* :mod:`~medsr.safeguards.provenance` — what made an output (version, model checksum, settings);
* :mod:`~medsr.safeguards.hallucination` — synthetic-lesion and noise tests of a model.

:func:`medsr.pipeline.upscale_with_safeguards` combines them for one image.
"""

from medsr.safeguards.consistency import (
    consistency_error,
    consistency_map,
    enforce_consistency,
    infer_scale,
)
from medsr.safeguards.maps import summarize_map, uncertainty_map, write_maps
from medsr.safeguards.ood import OutOfDistributionWarning, check_distribution, intensity_stats
from medsr.safeguards.operators import SUPPORTED, Measurement, resolve_measurement
from medsr.safeguards.provenance import attach_provenance, model_checksum, provenance

__all__ = [
    "SUPPORTED",
    "Measurement",
    "OutOfDistributionWarning",
    "attach_provenance",
    "check_distribution",
    "consistency_error",
    "consistency_map",
    "enforce_consistency",
    "infer_scale",
    "intensity_stats",
    "model_checksum",
    "provenance",
    "resolve_measurement",
    "summarize_map",
    "uncertainty_map",
    "write_maps",
]
