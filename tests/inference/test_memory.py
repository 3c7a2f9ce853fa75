"""medsr's own processes keep freed memory for reuse (:mod:`medsr.inference.memory`): a large
block comes from the heap, and once freed it stays there for the next one instead of going back
to the system (to be faulted in and zeroed again)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# one fresh process per case: the allocator setting is process-wide and decided once
_PROBE = r"""
import ctypes, json
import numpy as np
from medsr.inference.memory import retain_freed_memory

applied = retain_freed_memory()
again = retain_freed_memory()

class MallInfo2(ctypes.Structure):  # glibc >= 2.33
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

def info():
    try:
        f = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return None
    f.restype = MallInfo2
    m = f()
    return {"mmapped": m.hblkhd, "heap_free": m.fordblks}

a = np.ones(16 * 2**20, dtype=np.float32)  # 64 MB: above any mmap threshold glibc adapts to
held = info()
del a
freed = info()
print(json.dumps({"applied": applied, "again": again, "held": held, "freed": freed}))
"""
_MB64 = 64 * 2**20


def _probe(env_value: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "MEDSR_RETAIN_FREED_MEMORY"}
    if env_value is not None:
        env["MEDSR_RETAIN_FREED_MEMORY"] = env_value
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, env=env,
                         timeout=120, check=True)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def _glibc() -> bool:
    import platform

    return sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


@pytest.mark.skipif(not _glibc(), reason="mallopt is glibc's")
def test_a_large_block_comes_from_the_heap_and_stays_there_when_freed():
    kept = _probe(None)
    assert kept["applied"] is True and kept["again"] is True
    if kept["held"] is None:
        pytest.skip("glibc without mallinfo2 (< 2.33)")
    assert kept["held"]["mmapped"] < _MB64, kept  # not a mapping of its own
    assert kept["freed"]["heap_free"] >= _MB64, kept  # kept for the next block


def test_turned_off_by_the_environment():
    off = _probe("0")
    assert off["applied"] is False and off["again"] is False
    if _glibc() and off["held"] is not None:  # glibc's default: mapped apart, unmapped when freed
        assert off["held"]["mmapped"] >= _MB64, off
        assert off["freed"]["heap_free"] < _MB64, off


_RELEASE = r"""
import json
import numpy as np
from medsr.inference.memory import release_freed_memory, retain_freed_memory

def rss_mb():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096 / 2**20

retain_freed_memory()
base = rss_mb()
blocks = [np.ones(2**25 // 4, dtype=np.float32) for _ in range(8)]  # 8 x 32 MB, in use
pin = np.ones(2**18, dtype=np.uint8)  # a small block after them: the heap's top stays in use
del blocks
kept = rss_mb()
released = release_freed_memory()
after = rss_mb()
print(json.dumps({"base": base, "kept": kept, "released": released, "after": after}))
"""


@pytest.mark.skipif(not _glibc(), reason="malloc_trim is glibc's")
def test_a_finished_job_gives_its_freed_memory_back():
    """What a job freed stays in the heap (below the trim threshold, under a block in use) until
    :func:`release_freed_memory` hands it back, as the web service does after each job."""
    out = subprocess.run([sys.executable, "-c", _RELEASE], capture_output=True, text=True,
                         timeout=120, check=True)  # fmt: skip
    m = json.loads(out.stdout.strip().splitlines()[-1])
    assert m["kept"] - m["base"] > 200, m  # 256 MB freed but kept
    assert m["released"] is True
    assert m["kept"] - m["after"] > 200, m  # and given back
