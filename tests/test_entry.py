"""tests/_entry.py: run_medsr's children come from a fork server of its own."""

from __future__ import annotations

import os
import sys
from multiprocessing import forkserver
from pathlib import Path

import pytest

from medsr.io.isolated import IsolatedReader
from tests._entry import FORK_SERVER_PYTHONS, run_medsr
from tests.conftest import corpus_path


def _children_with_torch(pid: int) -> set[int]:
    """Direct children of ``pid`` that have libtorch mapped."""
    found = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == pid and "libtorch" in (proc / "maps").read_text():
                found.add(int(proc.name))
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
    return found


@pytest.mark.skipif(
    sys.version_info[:2] not in FORK_SERVER_PYTHONS,
    reason="this Python runs each run_medsr call in a fresh interpreter (no fork server)",
)
def test_a_reader_started_first_does_not_choose_what_run_medsr_preloads():
    """medsr's IsolatedReader (batch, the web service) starts multiprocessing's global fork
    server with medsr.io preloaded and no torch. run_medsr used that same server whenever a
    test had read a file in-process first: every later CLI call imported torch afresh (2-3 s
    more each) with medsr.io already in sys.modules. Its server is now its own, with torch."""
    reader = IsolatedReader(timeout_s=60)
    try:
        reader.read(corpus_path("CT_small.dcm"), "CT_small.dcm")
    finally:
        reader.close()
    readers_server = forkserver._forkserver._forkserver_pid
    assert readers_server is not None
    res = run_medsr("--version")
    assert res.returncode == 0, res.stderr
    servers = _children_with_torch(os.getpid())
    assert servers and readers_server not in servers, (servers, readers_server)
