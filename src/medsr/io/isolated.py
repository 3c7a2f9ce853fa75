"""Read an untrusted file in a child process, under a time limit.

Readers bound memory from headers (:mod:`medsr.io.limits`), but a malformed file can still make
a third-party decoder spin (a 954-byte TIFF kept tifffile busy for minutes) or crash the
interpreter (a Rust decoder's panic). :class:`IsolatedReader` therefore reads in a child process
(``forkserver``: a clean process with the readers already imported, ~20 ms per file): the child
runs :func:`medsr.io.load_image` (or the ``loader`` given), writes the pixels as an ``.npy`` file
and sends back the rest of the :class:`~medsr.image.MedImage` (and, optionally, what a
``describe`` function computed from it there). A child still running after ``timeout_s`` is
killed and the file refused (:class:`DecodeTimeoutError`); one that dies is a corrupt file.
:meth:`IsolatedReader.close` kills the children still running (shutdown).

The reader's own warnings (:class:`~medsr.errors.MedSRWarning`: a localizer left out, a
questionable header value) come back with the answer and are warned again in the caller's
process, as a read there would warn them (the child's own stderr would print them in Python's
raw format, naming whatever ``source`` is called there), or handed to the caller
(``read(..., notes=[])``), who names them as its user knows the input.

The front ends that read files they did not choose use it: the web service for uploads
(:class:`medsr.service.decode.UploadDecoder`) and ``medsr batch`` for every item. As with any
``spawn``/``forkserver`` child, a child imports the main script of the program: a script that
uses them must guard its work with ``if __name__ == "__main__":``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import multiprocessing
import os
import shutil
import signal
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medsr.errors import CorruptInputError, InputTooLargeError, MedSRError, MedSRWarning
from medsr.image import MedImage

__all__ = ["PRELOAD", "DecodeTimeoutError", "IsolatedReader", "noting"]

log = logging.getLogger("medsr.io")

#: imported once by the fork server, so every child starts with the readers loaded
PRELOAD = ("numpy", "medsr.io", "medsr.io.isolated", "pydicom", "nibabel", "tifffile", "PIL.Image")


class DecodeTimeoutError(CorruptInputError):
    """The file took longer than allowed to read (a malformed or hostile file)."""

    http_status = 422


def noting(read: Callable[[], Any], notes: list[str]) -> Any:
    """``read()``, its :class:`~medsr.errors.MedSRWarning` messages appended to ``notes`` (not
    printed, also when it raises); other warnings are shown as they would have been.

    Uses :class:`warnings.catch_warnings`, which swaps process-wide state: for a process that
    reads on one thread (the child of :class:`IsolatedReader`, one read at a time)."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            return read()
    finally:
        for w in caught:
            if issubclass(w.category, MedSRWarning):
                notes.append(str(w.message))
            else:
                warnings.showwarning(w.message, w.category, w.filename, w.lineno, w.file, w.line)


def _child(
    conn: Any,
    loader: Callable[[str], MedImage],
    source: str,
    npy: str,
    name: str,
    describe: Callable[[MedImage], Any] | None,
    timeout_s: float,
    options: dict[str, Any] | None = None,
) -> None:
    """Child process: read ``source``, save the pixels to ``npy``, send the rest back.

    The child also ends itself (SIGALRM, whose default action terminates even a process stuck
    in C code) a little after the time limit, so that it cannot outlive a parent that was
    killed before it could kill the child.
    """
    if hasattr(signal, "alarm"):
        signal.alarm(min(math.ceil(timeout_s) + 5, 2**31 - 1))
    notes: list[str] = []
    try:
        image = noting(lambda: loader(source, **options) if options else loader(source), notes)
        np.save(npy, image.array)
        fields = {f.name: getattr(image, f.name) for f in dataclasses.fields(image)}
        fields.pop("array")
        payload: tuple[Any, ...] = ("ok", fields, describe(image) if describe else None, notes)
        del image
    except MedSRError as exc:
        payload = ("error", exc, notes)
    except MemoryError:
        too_large = InputTooLargeError(f"'{name}' is too large to read on this machine")
        payload = ("error", too_large, notes)
    except BaseException as exc:  # a reader bug (even a Rust panic) is a file it cannot read
        crashed = CorruptInputError(f"'{name}' could not be read ({type(exc).__name__})")
        payload = ("error", crashed, notes)
    try:
        conn.send(payload)
    except Exception as exc:  # e.g. an exception that does not pickle
        conn.send(
            (
                "error",
                CorruptInputError(f"'{name}' could not be read ({type(exc).__name__})"),
                notes,
            )
        )
    finally:
        conn.close()


def _context(
    preload: Sequence[str],
) -> multiprocessing.context.ForkServerContext | multiprocessing.context.SpawnContext:
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(list(preload))  # used when the fork server first starts
        return ctx
    return multiprocessing.get_context("spawn")


@contextlib.contextmanager
def _scratch_npy() -> Iterator[Path]:
    folder = tempfile.mkdtemp(prefix="medsr-read-")
    try:
        yield Path(folder) / "pixels.npy"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class IsolatedReader:
    """Runs :func:`medsr.io.load_image` (or ``loader``) in a killable child process.

    Safe to use from several threads at once (one child per call). ``loader`` and ``describe``
    must be importable module-level functions (the child receives them by reference).
    """

    def __init__(
        self,
        timeout_s: float = 60.0,
        loader: Callable[..., MedImage] | None = None,
        *,
        preload: Sequence[str] = PRELOAD,
    ) -> None:
        if loader is None:
            from medsr.io import load_image as loader
        self.timeout_s = float(timeout_s)
        self.loader = loader
        self._ctx = _context(preload)
        self._lock = threading.Lock()
        self._children: set[Any] = set()
        self._closed = False

    def read(
        self,
        source: str | os.PathLike[str],
        name: str,
        *,
        npy: str | os.PathLike[str] | None = None,
        describe: Callable[[MedImage], Any] | None = None,
        options: dict[str, Any] | None = None,
        notes: list[str] | None = None,
    ) -> tuple[MedImage, Any]:
        """Read ``source`` (``name`` is what messages call it) → (image, ``describe(image)``);
        ``options``: keyword arguments of the loader (``series_uid`` for ``load_image``).
        The reader's warnings (:class:`~medsr.errors.MedSRWarning`, as their messages) are
        appended to ``notes`` where given (also when the read fails), else warned again here.

        The pixels travel through ``npy`` (kept: the caller's file), or through a temporary
        file that is removed again. Raises the reader's :class:`~medsr.errors.MedSRError`,
        :class:`DecodeTimeoutError` after ``timeout_s``, :class:`~medsr.errors.CorruptInputError`
        when the child dies, :class:`~medsr.errors.InputTooLargeError` when it runs out of memory.
        """
        if npy is None:
            with _scratch_npy() as scratch:
                return self.read(
                    source, name, npy=scratch, describe=describe, options=options, notes=notes
                )
        receiver, sender = self._ctx.Pipe(duplex=False)
        proc = self._ctx.Process(
            target=_child,
            args=(
                sender,
                self.loader,
                str(source),
                str(npy),
                name,
                describe,
                self.timeout_s,
                dict(options or {}),
            ),
            name="medsr-decode",
            daemon=True,
        )
        with self._lock:
            if self._closed:
                raise MedSRError("reading was stopped (shutting down)")
            proc.start()
            self._children.add(proc)
        sender.close()
        try:
            if not receiver.poll(self.timeout_s):
                log.warning("reading timed out after %g s; child killed", self.timeout_s)
                raise DecodeTimeoutError(
                    f"'{name}' could not be read within {self.timeout_s:g} s (the decoding time "
                    "limit); the file is probably malformed"
                )
            try:
                payload = receiver.recv()
            except (EOFError, OSError):  # the child died (crash, killed on shutdown)
                raise CorruptInputError(
                    f"'{name}' could not be read (the reader crashed)"
                ) from None
            except Exception as exc:  # an answer that does not unpickle here
                raise CorruptInputError(
                    f"'{name}' could not be read ({type(exc).__name__})"
                ) from None
        finally:
            receiver.close()
            if proc.is_alive():
                proc.kill()
            proc.join(timeout=5)
            with self._lock:
                self._children.discard(proc)
            if proc.exitcode is not None:
                proc.close()
        said = payload[-1]
        if notes is not None:
            notes += said
        else:
            for note in said:
                warnings.warn(note, MedSRWarning, stacklevel=2)
        if payload[0] == "error":
            raise payload[1]
        _, fields, described, _ = payload
        return MedImage(np.load(npy), **fields), described

    def close(self) -> None:
        """Kill every child still reading (their callers get an error at once); no new reads."""
        with self._lock:
            self._closed = True
            children = list(self._children)
        for proc in children:
            if proc.is_alive():
                proc.kill()
