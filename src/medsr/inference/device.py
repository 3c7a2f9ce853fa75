"""Where networks run: ``auto`` → CUDA when available, else the CPU."""

from __future__ import annotations

from typing import Any

from medsr.errors import InvalidParameterError

__all__ = ["cpu_model", "describe_device", "resolve_device"]


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


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; the platform's word elsewhere)."""
    import platform
    from pathlib import Path

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def describe_device(device: Any) -> str:
    """What a resolved device is, for a report: ``cpu (<CPU model>, N cores)`` or
    ``cuda:0 (<GPU name>)``."""
    import os

    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return f"{dev.type} ({cpu_model()}, {os.cpu_count()} cores)"
