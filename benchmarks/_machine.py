"""The machine description every benchmark writes beside its numbers."""

from __future__ import annotations

import os
import platform
from pathlib import Path

#: CPU flags that decide how fast the networks run: AVX-512 and its bf16 dot products, AMX tiles
SPEED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def _cpuinfo(key: str) -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def cpu_model() -> str:
    """CPU model name (:func:`medsr.inference.device.cpu_model`, what evaluation reports say)."""
    from medsr.inference.device import cpu_model as model

    return model()


def cpu_flags() -> dict[str, bool]:
    """Which of :data:`SPEED_FLAGS` the CPU reports (``lscpu``'s Flags line)."""
    flags = set(_cpuinfo("flags").split())
    return {f: f in flags for f in SPEED_FLAGS}


def flags_text() -> str:
    """``"avx2, no avx512f, no avx512_bf16, ..."``: the flags present and absent."""
    return ", ".join(f if on else f"no {f}" for f, on in cpu_flags().items())


def cpu_short() -> str:
    """``"AMD EPYC, AVX2 only"``: the CPU model and what it offers the networks (AMX, AVX-512
    BF16, AVX-512 or AVX2 alone), the machine column of a table whose rows come from several
    machines."""
    f = cpu_flags()
    kind = (
        "AMX" if f["amx_bf16"] else "AVX-512 BF16" if f["avx512_bf16"] else "AVX-512" if f["avx512f"]
        else "AVX2 only" if f["avx2"] else "no AVX2"
    )  # fmt: skip
    return f"{cpu_model()}, {kind}"


def gpu_name() -> str | None:
    """The CUDA device's name, or None without one."""
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:
        return None


def machine(*, load: bool = False) -> str:
    """``"<cpu> (<flags>), N cores[, load average at start L][, GPU g], torch V, Python P"``."""
    import torch

    suffix = ""
    if load:
        try:
            suffix = f", load average at start {os.getloadavg()[0]:.1f}"
        except OSError:
            pass
    gpu = gpu_name()
    if gpu:
        suffix += f", GPU {gpu}"
    return (
        f"{cpu_model()} ({flags_text()}), {os.cpu_count()} cores{suffix}, "
        f"torch {torch.__version__}, Python {platform.python_version()}"
    )
