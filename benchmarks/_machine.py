"""The machine description every benchmark writes beside its numbers."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (platform fallback elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine(*, load: bool = False) -> str:
    """``"<cpu>, N cores[, load average at start L], torch V, Python P"``."""
    import torch

    suffix = ""
    if load:
        try:
            suffix = f", load average at start {os.getloadavg()[0]:.1f}"
        except OSError:
            pass
    return f"{cpu_model()}, {os.cpu_count()} cores{suffix}, torch {torch.__version__}, Python {platform.python_version()}"
