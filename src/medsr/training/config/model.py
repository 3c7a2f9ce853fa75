"""``model`` section: the network that is trained and exported (and its low-band guard)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from medsr.errors import InvalidParameterError


@dataclass
class LowBandConfig:
    """``model.low_band``: train (and validate) the network through a low-band guard.

    The forward pass is :class:`medsr.models.lowband.LowBandGuard` ``(net, base, scale,
    cutoff)``: the output keeps the low band (spatial frequencies below ``cutoff`` × the input's
    Nyquist frequency) of the ``base`` interpolator (``bicubic``; ``kspace`` for k-space data),
    so the loss only trains what the input could not carry. Checkpoints and the exported
    safetensors hold the bare network; the model card records ``low_band: {base, cutoff}`` so
    inference applies the same guard.
    """

    base: str = "bicubic"
    cutoff: float = 0.5

    def validate(self, where: str) -> None:
        self.base = str(self.base).strip().lower()
        if not self.base:
            raise InvalidParameterError(
                f"{where}.base must name an interpolator (bicubic, kspace...)"
            )
        if not (math.isfinite(self.cutoff) and 0.0 < self.cutoff <= 1.0):
            raise InvalidParameterError(
                f"{where}.cutoff must be in (0, 1] (a fraction of the input's Nyquist frequency), "
                f"got {self.cutoff}"
            )

    def card(self) -> dict[str, Any]:
        return {"base": self.base, "cutoff": float(self.cutoff)}


@dataclass
class ModelConfig:
    """The network that is trained and exported: a registry name and constructor kwargs.

    ``scale`` comes from the top-level ``scale`` and ``in_channels`` is 1 (luminance); do
    not repeat them in ``kwargs``. ``init``: start from trained weights (an exported
    ``.safetensors`` or a medsr ``.ckpt`` of the same architecture) — every tensor whose name and
    shape match is loaded, so a ×2 network can start a ×4 one (only the upsampler is new) or
    a shipped default can be fine-tuned on new data; the optimiser and schedule start afresh.
    ``low_band``: ``{base: bicubic, cutoff: 0.5}`` (or just the base's name) trains through a
    low-band guard (:class:`LowBandConfig`); ``null`` (default) trains the bare network.
    ``data_consistency``: ``kspace`` trains (and validates) through the k-space data-consistency
    step (:class:`medsr.models.lowband.KSpaceConsistencyGuard`: the output keeps the whole
    central k-space block the LR measured, so the loss trains only what the acquisition did not
    measure); the card records it and inference applies it whatever ``--consistency`` says, as
    part of the model. Needs k-space training data (``degradation.kind: kspace``).
    """

    name: str = ""
    kwargs: dict[str, Any] = field(default_factory=dict)
    init: str | None = None
    low_band: LowBandConfig | None = None
    data_consistency: str | None = None

    def validate(self, where: str) -> None:
        if not self.name:
            raise InvalidParameterError(f"{where}.name is required (a registered model name)")
        if self.low_band is not None:
            self.low_band.validate(f"{where}.low_band")
        if self.data_consistency is not None:
            from medsr.models.lowband import DATA_CONSISTENCY_KINDS

            kind = str(self.data_consistency).strip().lower()
            if kind not in DATA_CONSISTENCY_KINDS:
                raise InvalidParameterError(
                    f"{where}.data_consistency must be one of {', '.join(DATA_CONSISTENCY_KINDS)} "
                    f"(or null), got {self.data_consistency!r}"
                )
            self.data_consistency = kind
        for key in ("scale", "in_channels"):
            if key in self.kwargs:
                raise InvalidParameterError(
                    f"{where}.kwargs.{key} is set by medsr (scale from the top-level 'scale', "
                    "in_channels=1 for luminance); remove it"
                )
