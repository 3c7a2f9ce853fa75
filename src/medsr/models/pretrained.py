"""Trained weights shipped inside the package (``medsr/weights/*.safetensors``).

Each file carries its model card (see :mod:`medsr.models.weights`). ``default-x2`` names the
file ``default-x2.safetensors``; ``medsr upscale`` without ``--model`` uses ``default-x{scale}``
when it is shipped and falls back to bicubic (saying so) when it is not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medsr.errors import UnknownModelError

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"


def bundled_weights() -> dict[str, Path]:
    """Name → path of every shipped weights file."""
    if not WEIGHTS_DIR.is_dir():
        return {}
    return {p.name.removesuffix(".safetensors"): p for p in sorted(WEIGHTS_DIR.glob("*.safetensors"))}


def pretrained_path(name: str) -> Path | None:
    return bundled_weights().get(name.lower())


def load_pretrained(name: str, device: str = "cpu") -> tuple[Any, dict[str, Any]]:
    """Network and model card of the shipped weights ``name`` (e.g. ``default-x2``)."""
    from medsr.models.weights import load_model

    path = pretrained_path(name)
    if path is None:
        shipped = ", ".join(bundled_weights()) or "none"
        raise UnknownModelError(f"no shipped weights named {name!r} (shipped: {shipped})")
    net, card = load_model(path, device=device)
    card["name"] = name
    return net, card


def default_model_name(scale: int) -> str:
    """``default-x{scale}`` when shipped, else ``bicubic``."""
    name = f"default-x{scale}"
    return name if pretrained_path(name) else "bicubic"
