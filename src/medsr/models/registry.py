"""One registry for every upscaler, classical or learned.

Register a model in a few lines::

    import torch.nn as nn
    from medsr.models import register_model

    @register_model("tiny")
    class Tiny(nn.Module):
        \"\"\"A one-layer example (cite the paper here).\"\"\"
        def __init__(self, in_channels=1, out_channels=1, num_features=8, scale=2):
            super().__init__()
            self.scale = scale
            self.body = nn.Conv2d(in_channels, out_channels * scale**2, 3, padding=1)
            self.shuffle = nn.PixelShuffle(scale)
        def forward(self, x):
            return self.shuffle(self.body(x))

``create_model("tiny", scale=3)`` then builds it, ``medsr upscale --model tiny`` finds it, and
the shared test runs it. Constructor arguments use the same names everywhere:
``in_channels``, ``out_channels``, ``num_features``, ``num_blocks``, ``scale``. Forward takes
``(N, C, H, W)`` and returns ``(N, C, H·s, W·s)``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, TypeVar

from medsr.errors import UnknownModelError

T = TypeVar("T")

_REGISTRY: dict[str, Callable[..., Any]] = {}
# modules whose import registers the built-in models (imported lazily, on first lookup)
_BUILTIN_MODULES = (
    "medsr.models.classical",
    "medsr.models.srcnn",
    "medsr.models.vdsr",
    "medsr.models.residual5",
    "medsr.models.axial",
    "medsr.models.srdensenet",
    "medsr.models.rdn",
    "medsr.models.srresnet",
    "medsr.models.efficient",
    "medsr.models.discriminators",
    "medsr.models.slice",
)
_loaded = False


def register_model(name: str) -> Callable[[T], T]:
    """Class decorator: make ``cls`` available as ``create_model(name, ...)``."""
    key = name.lower()

    def decorator(cls: T) -> T:
        if key in _REGISTRY and _REGISTRY[key] is not cls:
            raise ValueError(f"a model named {name!r} is already registered ({_REGISTRY[key]!r})")
        _REGISTRY[key] = cls  # type: ignore[assignment]
        cls.registry_name = key  # type: ignore[attr-defined]
        return cls

    return decorator


def _ensure_builtins() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for mod in _BUILTIN_MODULES:
            importlib.import_module(mod)


def get_model_class(name: str) -> Callable[..., Any]:
    _ensure_builtins()
    try:
        return _REGISTRY[name.lower()]
    except KeyError:
        raise UnknownModelError(
            f"unknown model {name!r}; available: {', '.join(sorted(_REGISTRY))}"
        ) from None


def create_model(name: str, **kwargs: Any) -> Any:
    """Instantiate the model registered as ``name`` with constructor ``kwargs``."""
    return get_model_class(name)(**kwargs)


def list_models(*, learned: bool | None = None, kind: str | None = "upscaler") -> list[str]:
    """Registered model names.

    ``learned=False`` gives only the classical interpolators, ``learned=True`` only networks.
    ``kind`` filters on the class attribute ``kind`` (``"upscaler"`` when absent): the default
    lists upscalers only, ``kind="discriminator"`` the adversarial discriminators, ``kind=None``
    everything.
    """
    _ensure_builtins()
    names = sorted(_REGISTRY)
    if kind is not None:
        names = [n for n in names if getattr(_REGISTRY[n], "kind", "upscaler") == kind]
    if learned is None:
        return names
    return [n for n in names if bool(getattr(_REGISTRY[n], "learned", True)) == learned]
