"""Weights as safetensors with the model card inside (never pickles).

A weights file is self-describing: its safetensors metadata holds the model card as JSON under
``"medsr_card"`` — architecture name and constructor kwargs, scale, intensity normalisation,
training data, metrics, version — so ``load_model(path)`` rebuilds the network without any other
file, and inference uses the normalisation the model was trained with.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from medsr.errors import CorruptInputError, InputNotFoundError, InvalidParameterError
from medsr.io._atomic import atomic_file
from medsr.models.card_schema import check_report_sections

CARD_KEY = "medsr_card"


def save_model(
    model: Any, path: str | os.PathLike[str], card: dict[str, Any], *, overwrite: bool = True
) -> Path:
    """Write ``model``'s state dict and ``card`` to ``path`` (``.safetensors``), atomically.

    ``card`` must contain ``architecture`` (registry name) and ``kwargs`` (constructor
    arguments) so the file can be loaded on its own.
    """
    from safetensors.torch import save_file

    for key in ("architecture", "kwargs"):
        if key not in card:
            raise InvalidParameterError(f"model card needs {key!r}")
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    p = Path(path)
    with atomic_file(p, overwrite=overwrite) as tmp:
        save_file(state, str(tmp), metadata={CARD_KEY: json.dumps(card, sort_keys=True)})
    return p


def read_card(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The model card stored in a safetensors file, without loading tensors (checked by
    :func:`check_card`: a card that cannot rebuild the network is one clear error here)."""
    from safetensors import safe_open

    p = Path(path)
    if not p.is_file():
        raise InputNotFoundError(f"weights file '{p}' does not exist")
    try:
        with safe_open(str(p), framework="numpy") as fh:  # the header only: no torch needed
            meta = fh.metadata() or {}
    except Exception as exc:
        raise CorruptInputError(
            f"'{p.name}' is not a valid safetensors weights file: {str(exc)[:200]}"
        ) from None
    if CARD_KEY not in meta:
        raise CorruptInputError(f"'{p.name}' has no medsr model card; cannot tell its architecture")
    try:
        card = json.loads(meta[CARD_KEY])
    except ValueError:
        raise CorruptInputError(
            f"'{p.name}' has a medsr model card that is not valid JSON"
        ) from None
    return check_card(card, p.name)


def check_card(card: Any, name: str) -> dict[str, Any]:
    """``card`` when it can rebuild a network: a JSON object with an ``architecture`` name,
    constructor ``kwargs`` (a mapping), when given, a whole-number ``scale`` that the kwargs' own
    ``scale`` agrees with, and report sections of their types
    (:func:`medsr.models.card_schema.check_report_sections`); one :class:`CorruptInputError` naming
    ``name`` otherwise."""
    if not isinstance(card, dict):
        raise CorruptInputError(f"'{name}' has a model card that is not a JSON object")
    arch = card.get("architecture")
    if not isinstance(arch, str) or not arch.strip():
        raise CorruptInputError(f"'{name}' has a model card without an architecture")
    kwargs = card.get("kwargs")
    if not isinstance(kwargs, dict):
        raise CorruptInputError(
            f"'{name}' has a model card without the network's constructor arguments (kwargs)"
        )
    scale = card.get("scale")
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, int) or scale < 1):
        raise CorruptInputError(
            f"'{name}' has a model card whose scale is not a whole factor: {scale!r}"
        )
    if scale is not None and "scale" in kwargs and kwargs["scale"] != scale:
        raise CorruptInputError(
            f"'{name}' has a model card that says ×{scale} but builds its network for "
            f"×{kwargs['scale']} (kwargs.scale)"
        )
    check_report_sections(card, name)
    return card


def load_model(path: str | os.PathLike[str], device: str = "cpu") -> tuple[Any, dict[str, Any]]:
    """Rebuild the network described by the card in ``path`` and load its weights."""
    from safetensors.torch import load_file

    from medsr.models.registry import create_model

    card = read_card(path)
    name = Path(path).name
    try:
        model = create_model(card["architecture"], **card["kwargs"])
    except (TypeError, ValueError) as exc:  # constructor arguments the architecture does not take
        raise CorruptInputError(
            f"'{name}': its model card cannot build {card['architecture']!r} with "
            f"{card['kwargs']}: {exc}"
        ) from None
    state = load_file(str(path), device=device)
    own = model.state_dict()
    wrong = [
        f"{k} is {list(v.shape)} in the file, {list(own[k].shape)} in the network"
        for k, v in state.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    if wrong:
        raise CorruptInputError(
            f"weights '{name}' do not fit the network their card describes "
            f"({card['architecture']!r} with {card['kwargs']}): {len(wrong)} tensor"
            f"{'s' if len(wrong) > 1 else ''} of another shape, e.g. {wrong[0]}"
        )
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CorruptInputError(
            f"weights '{name}' do not match architecture {card['architecture']!r} "
            f"(missing {len(missing)}, unexpected {len(unexpected)} tensors)"
        )
    card.setdefault("name", name.removesuffix(".safetensors"))
    return model.eval(), card
