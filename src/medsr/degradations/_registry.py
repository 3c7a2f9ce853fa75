"""Name → degradation factory registry (kept apart from ``__init__`` to avoid import cycles)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from medsr.errors import InvalidParameterError

T = TypeVar("T", bound=Callable[..., Any])

_REGISTRY: dict[str, Callable[..., Any]] = {}


def register_degradation(name: str) -> Callable[[T], T]:
    """Class/factory decorator: make ``get_degradation(name, **params)`` build it.

    The factory is called with the keyword parameters and must return a callable
    ``(x, generator=None) -> Tensor``. Names are case-insensitive; registering a name twice
    replaces the earlier entry only when it is the same object (module reloads).
    """
    key = name.strip().lower()
    if not key:
        raise ValueError("a degradation name must not be empty")

    def decorator(factory: T) -> T:
        existing = _REGISTRY.get(key)
        if existing is not None and getattr(existing, "__qualname__", None) != getattr(
            factory, "__qualname__", None
        ):
            raise ValueError(f"a degradation named {key!r} is already registered ({existing!r})")
        _REGISTRY[key] = factory
        return factory

    return decorator


def get_factory(name: str) -> Callable[..., Any]:
    key = str(name).strip().lower()
    try:
        return _REGISTRY[key]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise InvalidParameterError(
            f"unknown degradation {name!r}; choose one of: {known}"
        ) from None


def get_degradation(name: str, **params: Any) -> Any:
    """Build the registered degradation ``name`` with ``params`` (python values, not strings)."""
    factory = get_factory(name)
    try:
        inspect.signature(factory).bind(**params)
    except TypeError as exc:
        raise InvalidParameterError(f"bad parameters for degradation {name!r}: {exc}") from None
    return factory(**params)


def list_degradations() -> list[str]:
    """Sorted names of every registered degradation."""
    return sorted(_REGISTRY)
