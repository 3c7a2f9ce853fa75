"""Run an interpolation recipe from ``configs/interp-*.yaml``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from medsr.errors import InvalidParameterError


def load_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    import yaml

    cfg = yaml.safe_load(Path(path).read_text())
    for key in ("model", "data", "train"):
        if key not in (cfg or {}):
            raise InvalidParameterError(f"{Path(path).name}: interpolation config needs a {key!r} section")
    return cfg


def train_from_config(path: str | os.PathLike[str], *, steps: int | None = None, out: str | os.PathLike[str] | None = None) -> Path:
    """Train the recipe in ``path`` (``steps``/``out`` override the file); returns the weights path."""
    from medsr.interpolation.train import train_interpolator

    cfg = load_config(path)
    tr, data = cfg["train"], cfg["data"]
    return train_interpolator(
        cfg["model"]["name"],
        data["train"],
        int(steps if steps is not None else tr["steps"]),
        patch=int(data.get("patch", 128)),
        seed=int(tr.get("seed", 0)),
        out=out or cfg.get("out", f"{cfg['model']['name']}.safetensors"),
        batch_size=int(tr.get("batch_size", 4)),
        lr=tr.get("lr"),
        adv_weight=tr.get("adv_weight"),
        model_kwargs=dict(cfg["model"].get("kwargs") or {}),
        axes=data.get("axes", ("z", "y", "x")),
    )
