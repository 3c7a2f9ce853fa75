"""Where networks run: ``auto`` → CUDA when available, else the CPU."""

from __future__ import annotations

from typing import Any

from medsr.errors import InvalidParameterError

__all__ = ["resolve_device"]


def resolve_device(device: str = "auto") -> Any:
    """``auto`` → CUDA when available, else CPU. A CUDA request on a CPU machine is an error."""
    import torch

    device = device.strip().lower() if isinstance(device, str) else device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InvalidParameterError("--device cuda was requested but no CUDA GPU is available")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise InvalidParameterError(f"unknown device {device!r}; use auto, cpu or cuda")
    return torch.device(device)
