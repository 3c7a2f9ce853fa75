"""Keep freed memory in the process, so that each plane's tensors do not fault their pages in again.

A network's intermediate tensors are large (``fast-x2`` on a 512² plane: 24 × 512² floats, 25 MB
each; ``default-x2``: 48 MB) and live for one layer. glibc's ``malloc`` serves blocks above its
mmap threshold (at most 32 MB, adapting upwards from 128 kB) with a fresh ``mmap`` and gives them
back with ``munmap`` when freed, and trims the heap's free top above a threshold: every plane then
faults in, and the kernel zeroes, every page of every such tensor again. On the 2-core AMD EPYC
of ``benchmarks/results/speed*.md``, network time per 512² plane (bf16): ``fast-x2`` 170-185 →
138-143 ms, ``default-x2`` 766-786 → 568-575 ms with the freed memory kept (fp32 ``fast-x2``:
275 → 210 ms); the whole process's peak memory 30-115 MB higher (``speed_allocator.md``).

:func:`retain_freed_memory` tells glibc to serve every block from its heap (``M_MMAP_MAX`` = 0)
and to give the heap's free top back only above :data:`TRIM_MB` (``M_TRIM_THRESHOLD``): what one
plane freed serves the next, and memory still goes back after a job much larger than that.

It changes the whole process's allocator, so medsr applies it only in processes it owns: the
``medsr`` command (and so ``medsr serve`` and ``medsr batch``), the web service's startup
(however its app is served), the batch engine's Ray actors, and the benchmarks. A program that
calls the Python API may call it too. Elsewhere than glibc (macOS, Windows, musl) it does
nothing. ``MEDSR_RETAIN_FREED_MEMORY=0`` turns it off.

A long-running process keeps what its largest job freed, below the trim threshold or behind a
block still in use. :func:`release_freed_memory` (glibc's ``malloc_trim``) gives every free page
back at once: the web service calls it after each job, so an idle server holds no more memory
than it uses.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
import sys

__all__ = ["TRIM_MB", "release_freed_memory", "retain_freed_memory"]

log = logging.getLogger(__name__)

#: the heap's free top above this many MB goes back to the system (``M_TRIM_THRESHOLD``)
TRIM_MB = 512
_M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
_M_MMAP_MAX = -4
_ENV = "MEDSR_RETAIN_FREED_MEMORY"
_applied: bool | None = None


def retain_freed_memory(trim_mb: int = TRIM_MB) -> bool:
    """Ask glibc to keep freed blocks for reuse (see the module); True when it took effect.

    Idempotent: the first call decides. Does nothing (False) outside glibc or with
    ``MEDSR_RETAIN_FREED_MEMORY=0`` in the environment.
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get(_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    libc = _glibc()
    if libc is None:
        return False
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    trim = max(0, min(int(trim_mb), 2047)) * 2**20
    # mallopt returns 1 on success. With mmap off every block comes from the heap (a thread's
    # arena that cannot hold a block falls back to the main heap). Either call alone fixes the
    # mmap threshold (no longer adapting upwards): the trim threshold alone would leave every
    # block above 128 kB to mmap, twice as slow, so it is set only once mmap is off.
    _applied = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, trim))
    log.debug("freed memory kept for reuse: %s", _applied)
    return _applied


def release_freed_memory() -> bool:
    """Give the heap's free pages back to the system now (glibc ``malloc_trim(0)``, which also
    releases free pages between blocks still in use); True when some were released. For a
    long-running process between jobs; elsewhere than glibc it does nothing (False)."""
    libc = _glibc()
    if libc is None:
        return False
    trim = libc.malloc_trim
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return bool(trim(0))


@functools.lru_cache(maxsize=1)
def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (it has ``mallopt`` and ``malloc_trim``), else None; looked
    up once (``find_library`` runs ``ldconfig``), not after every job of the web service."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018 (musl has neither)
    except (OSError, AttributeError):
        return None
    return libc
