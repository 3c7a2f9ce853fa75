"""``medsr`` run as a user runs it, without paying for torch's import in every call.

Tests of the command line check what a user sees: the exit status, stdout and stderr of a
process of its own (never a traceback, one ``error:`` line). A fresh interpreter per call spends
2–4 s (more on a busy 2-core machine) importing torch, MONAI, SciPy and pydicom before medsr
starts — minutes over the suite. :func:`run_medsr` forks each call from a server process that
imported those third-party libraries once (:mod:`multiprocessing`'s *forkserver*, a fresh
interpreter, not a fork of pytest): every call is still a new process with its own memory, its
own stdout/stderr file descriptors, stdin from ``/dev/null``, the caller's environment and working
directory, and ``medsr.cli.main()`` imported and run afresh in it (medsr itself is never
preloaded, so nothing of medsr outlives a call). What differs from ``python -c``: torch & co. are
already in ``sys.modules`` — a test about what a command does *not* import, or about the
interpreter's start-up, runs its own ``subprocess`` instead.

The server is this module's own (:data:`_SERVER`), not :mod:`multiprocessing`'s one global fork
server: medsr's :class:`~medsr.io.isolated.IsolatedReader` (batch, the web service) uses that one
with a preload of its own (``medsr.io``), and whichever started first decided for both. When a
test read a file in-process before the first ``run_medsr``, every later call was forked from a
server without torch (2-3 s more per call) and with ``medsr.io`` already imported.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
from multiprocessing import forkserver, popen_forkserver, reduction, spawn, util
from multiprocessing.context import ForkServerProcess, set_spawning_popen
from pathlib import Path
from typing import Any

#: what every medsr command that reaches a model imports (not medsr: it is imported per call)
PRELOAD = [
    "numpy",
    "scipy.ndimage",
    "scipy.signal",
    "torch",
    "monai",
    "pydicom",
    "nibabel",
    "PIL.Image",
    "typer",
    # what typer imports when it parses a command line (pydantic's validators: 0.15-0.3 s in
    # every call); private, so a typer without it is no error (forkserver skips an ImportError)
    "typer._adapters",
    "rich",
]

#: the Pythons whose ``multiprocessing.popen_forkserver.Popen._launch`` :class:`_Popen` copies
#: (others — 3.14 adds an authentication step — run each call in a fresh interpreter: slower,
#: the same process semantics)
FORK_SERVER_PYTHONS = ((3, 11), (3, 12), (3, 13))
#: the fork server of run_medsr only (started on the first call; it ends with this process)
_SERVER = forkserver.ForkServer()
_SERVER.set_forkserver_preload(PRELOAD)


class _Popen(popen_forkserver.Popen):
    """``popen_forkserver.Popen`` whose child comes from :data:`_SERVER` (its ``_launch``, with
    the server named instead of the module's global one)."""

    def _launch(self, process_obj: Any) -> None:
        prep_data = spawn.get_preparation_data(process_obj._name)
        buf = io.BytesIO()
        set_spawning_popen(self)
        try:
            reduction.dump(prep_data, buf)
            reduction.dump(process_obj, buf)
        finally:
            set_spawning_popen(None)
        self.sentinel, w = _SERVER.connect_to_new_process(self._fds)
        _parent_w = os.dup(w)  # the child's sentinel of its parent, as in the original
        self.finalizer = util.Finalize(self, util.close_fds, (_parent_w, self.sentinel))
        with open(w, "wb", closefd=True) as f:
            f.write(buf.getbuffer())
        self.pid = forkserver.read_signed(self.sentinel)


class _Process(ForkServerProcess):
    @staticmethod
    def _Popen(process_obj: Any) -> _Popen:  # type: ignore[override]
        return _Popen(process_obj)


def _child(args: list[str], cwd: str, env: dict[str, str], out: str, err: str) -> None:
    """In the forked process: the caller's directory and environment, fresh fds 0/1/2, then
    ``medsr.cli.main()`` as ``python -c`` would run it (its ``sys.exit`` is the exit status)."""
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    for fd, path, flags in (
        (0, os.devnull, os.O_RDONLY),
        (1, out, os.O_WRONLY),
        (2, err, os.O_WRONLY),
    ):
        new = os.open(path, flags)
        os.dup2(new, fd)
        os.close(new)
    sys.stdin = open(0, encoding="utf-8", closefd=False)
    sys.stdout = open(1, "w", encoding="utf-8", closefd=False)
    sys.stderr = open(2, "w", encoding="utf-8", closefd=False)
    sys.argv = ["-c", *args]
    from medsr.cli import main

    try:
        main()
    finally:  # what the interpreter does at exit (multiprocessing ends the process with os._exit)
        import atexit

        atexit._run_exitfuncs()


def run_medsr(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``medsr ARGS…`` in a new process (see the module's docstring): its exit status, stdout
    and stderr, like ``subprocess.run([sys.executable, "-c", "…main()", *args], capture_output=True,
    text=True, timeout=timeout)``; :class:`subprocess.TimeoutExpired` after ``timeout`` s (the
    process is killed)."""
    if sys.version_info[:2] not in FORK_SERVER_PYTHONS:  # _Popen._launch copies 3.11–3.13's
        return subprocess.run(
            [sys.executable, "-c", "from medsr.cli import main; main()", *args],
            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="medsr-entry-") as tmp:
        out, err = Path(tmp, "stdout"), Path(tmp, "stderr")
        out.touch()
        err.touch()
        proc = _Process(
            target=_child, args=(list(args), os.getcwd(), dict(os.environ), str(out), str(err))
        )
        proc.start()
        proc.join(timeout)
        if proc.exitcode is None:
            proc.kill()
            proc.join()
            raise subprocess.TimeoutExpired(
                ["medsr", *args], timeout, out.read_text(), err.read_text()
            )
        return subprocess.CompletedProcess(
            ["medsr", *args],
            proc.exitcode,
            out.read_text(encoding="utf-8"),
            err.read_text(encoding="utf-8"),
        )
