"""``card`` section: what the exported model card says about the model in words.

Optional; every key a human would otherwise have to add to the card by hand (the shipped cards'
``scripts/write_cards.py``). Left out, :func:`medsr.training.card.complete_card` writes
defaults made from the run (research use only, the files and modalities trained on, the
degradation trained for)::

    card:
      summary: RLFN x2 for our 3T knee protocol
      intended_use: research on knee MR super-resolution at our site; not for diagnosis
      limitations:
        - trained on 12 knees from one scanner
      out_of_scope:
        - other scanners, other joints, children

Changing it never changes training, so a resumed run may change it (:data:`RESUME_MAY_CHANGE`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from medsr.errors import InvalidParameterError


@dataclass
class CardConfig:
    """Words for the model card (``summary``, ``intended_use``, ``limitations``,
    ``out_of_scope``)."""

    summary: str | None = None
    intended_use: str | None = None
    limitations: list[str] = field(default_factory=list)
    out_of_scope: list[str] = field(default_factory=list)

    def validate(self, where: str) -> None:
        for key in ("summary", "intended_use"):
            value = getattr(self, key)
            if value is not None:
                value = value.strip()
                setattr(self, key, value or None)
        for key in ("limitations", "out_of_scope"):
            items = [str(v).strip() for v in getattr(self, key)]
            if not all(items):
                raise InvalidParameterError(f"{where}.{key} must not hold empty entries")
            setattr(self, key, items)
