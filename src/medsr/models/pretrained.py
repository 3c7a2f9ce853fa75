"""Trained weights shipped inside the package (``medsr/weights/*.safetensors``).

Each file carries its model card (see :mod:`medsr.models.weights`). ``default-x2`` names the
file ``default-x2.safetensors``; ``medsr upscale`` without ``--model`` uses ``default-x{scale}``
when it is shipped and falls back to bicubic (saying so) when it is not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medsr.errors import UnknownModelError
from medsr.models.resolver import WEIGHTS_DIR, default_model_name, resolve_model, shipped_weights

__all__ = [
    "WEIGHTS_DIR",
    "bundled_weights",
    "default_model_name",
    "load_pretrained",
    "pretrained_path",
]


def bundled_weights() -> dict[str, Path]:
    """Name → path of every shipped weights file (in-plane upscalers and slice interpolators)."""
    return shipped_weights()


def pretrained_path(name: str) -> Path | None:
    return bundled_weights().get(name.lower())


def load_pretrained(name: str, device: str = "cpu") -> tuple[Any, dict[str, Any]]:
    """Network and model card of the shipped weights ``name`` (e.g. ``default-x2``)."""
    if pretrained_path(name) is None:
        shipped = ", ".join(bundled_weights()) or "none"
        raise UnknownModelError(f"no shipped weights named {name!r} (shipped: {shipped})")
    loaded = resolve_model(name, device=device)
    return loaded.net, loaded.card
