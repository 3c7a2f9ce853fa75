"""The models this server offers, resolved once by :mod:`medsr.models.resolver`.

* the classical interpolators of the registry (``bicubic``, ``lanczos``...), at every scale;
* the shipped in-plane models (:func:`~medsr.models.resolver.list_pretrained`) unless
  ``Settings.pretrained`` is off;
* in-plane ``*.safetensors`` files in ``Settings.weights_dirs`` (each with its model card);
* the self-supervised modes of :mod:`medsr.selfsup` when this installation has them.

A name from a form is only ever looked up here: it is never handed to the resolver as a path.
Learned models are :class:`~medsr.models.resolver.LoadedModel` objects kept for the server's
life, so each network is loaded once, on its first job.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from medsr.errors import InvalidParameterError, MedSRError
from medsr.models.resolver import (
    SCALES,
    WEIGHTS_DIR,
    LoadedModel,
    default_model_name,
    list_pretrained,
    resolve_model,
)

log = logging.getLogger("medsr.service")

SELFSUP_CARDS: dict[str, dict[str, Any]] = {
    "through-plane": {
        "name": "through-plane",
        "kind": "self-supervised",
        "learned": True,
        "description": "Through-plane super-resolution: the shipped prior (tp-x2/tp-x4) on sagittal and "
        "coronal reformats, optionally adapted to the volume's own in-plane detail.",
    },
    "zero-shot": {
        "name": "zero-shot",
        "kind": "self-supervised",
        "learned": True,
        "description": "Zero-shot super-resolution: a small network trained on the image itself (ZSSR).",
    },
}


def selfsup_function(mode: str) -> Callable[..., Any] | None:
    """``medsr.selfsup``'s function for ``mode`` when this installation has it."""
    name = {"through-plane": "through_plane_upscale", "zero-shot": "zero_shot_upscale"}.get(mode)
    if name is None:
        return None
    try:
        module = importlib.import_module("medsr.selfsup")
    except ImportError:
        return None
    fn = getattr(module, name, None)
    return fn if callable(fn) else None


def selfsup_card(mode: str) -> dict[str, Any]:
    return {**SELFSUP_CARDS[mode], "scales": list(SCALES)}


def _classical_card(name: str) -> dict[str, Any]:
    from medsr.models.registry import get_model_class

    doc = (get_model_class(name).__doc__ or "").strip()
    lines = [ln.strip() for ln in doc.splitlines() if ln.strip()]
    card: dict[str, Any] = {
        "name": name,
        "kind": "classical",
        "learned": False,
        "description": lines[0] if lines else "",
        "scales": list(SCALES),
    }
    if len(lines) > 1:
        card["reference"] = " ".join(lines[1:])[:300]
    return card


def _learned_card(model: LoadedModel) -> dict[str, Any]:
    """The public part of a model card: no tensors, constructor arguments or private keys."""
    card = model.card
    public = {
        k: v for k, v in card.items() if k not in ("weights", "kwargs") and not k.startswith("_")
    }
    public.update(
        name=model.name,
        kind=str(card.get("kind") or model.kind),
        learned=True,
        shipped=model.shipped,
        checksum=model.checksum,
        description=str(
            card.get("description") or f"{card.get('architecture', 'network')} ×{model.scale}"
        ),
        scales=[int(model.scale or 2)],
    )
    return public


class ModelCatalog:
    """Name → model for one server (built on first use, then kept)."""

    def __init__(self, *, pretrained: bool = True, weights_dirs: Iterable[Path] = ()):
        self.pretrained = pretrained
        self.weights_dirs = tuple(Path(d) for d in weights_dirs)
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[dict[str, Any], LoadedModel | None]] | None = None

    def _build(self) -> dict[str, tuple[dict[str, Any], LoadedModel | None]]:
        from medsr.models.registry import list_models

        out: dict[str, tuple[dict[str, Any], LoadedModel | None]] = {}
        for name in list_models(learned=False):
            out[name] = (_classical_card(name), None)
        learned: list[LoadedModel] = list_pretrained("in-plane") if self.pretrained else []
        shipped = WEIGHTS_DIR.resolve()
        for folder in self.weights_dirs:
            if not folder.is_dir() or folder.resolve() == shipped:
                continue
            for path in sorted(folder.glob("*.safetensors")):
                try:
                    model = resolve_model(path)
                except MedSRError:
                    log.warning("skipping unreadable weights file in a models folder")
                    continue
                if model.kind == "in-plane":
                    learned.append(model)
        for model in learned:
            out[model.name] = (_learned_card(model), model)
        return out

    @property
    def entries(self) -> dict[str, tuple[dict[str, Any], LoadedModel | None]]:
        with self._lock:
            if self._entries is None:
                self._entries = self._build()
            return self._entries

    def cards(self) -> list[dict[str, Any]]:
        """Public model cards of every model offered (self-supervised modes included)."""
        cards = [card for card, _ in self.entries.values()]
        cards += [selfsup_card(m) for m in SELFSUP_CARDS if selfsup_function(m) is not None]
        return cards

    def lookup(self, name: str, scale: int) -> tuple[dict[str, Any], str | LoadedModel]:
        """The public card and what to hand to the pipeline (a classical name or a LoadedModel)
        for the in-plane model ``name``; ``default`` is the shipped default-x{scale} when this
        server offers it, bicubic otherwise."""
        entries = self.entries
        key = name.strip()
        if key.lower() == "default":
            key = default_model_name(scale) if self.pretrained else "bicubic"
            if key not in entries:
                key = "bicubic"
        entry = entries.get(key) or entries.get(key.lower())
        if entry is None:
            raise InvalidParameterError(
                f"unknown model {name!r}; available: {', '.join(sorted(entries))}"
            )
        card, loaded = entry
        if (
            loaded is not None and name.strip().lower() == "default"
        ):  # it follows the stated physics
            loaded = dataclasses.replace(loaded, by_default=True)
        return card, (loaded if loaded is not None else card["name"])
