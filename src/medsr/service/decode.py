"""Decode an untrusted upload in a child process, under a time limit.

Readers bound memory from headers (:mod:`medsr.io.limits`), but a malformed file can still make
a third-party decoder spin (a 954-byte TIFF kept tifffile busy for minutes) or crash the
interpreter (a Rust decoder's panic). So the web service never decodes in a request thread:
:class:`UploadDecoder` forks a child (``forkserver``: a clean process with the readers already
imported, ~20 ms per upload), which reads the file with :func:`medsr.io.load_image`, writes the
pixels as ``input.npy`` in the job folder (the preview copy the service keeps anyway) and sends
back the image's header fields and the job's summary. A child still running after
``timeout_s`` is killed and the upload refused (422); one that dies is a corrupt file (422).
:meth:`UploadDecoder.close` kills the children still running (shutdown).
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medsr.errors import CorruptInputError, InputTooLargeError, MedSRError
from medsr.image import MedImage

log = logging.getLogger("medsr.service")

#: imported once by the fork server, so every decode child starts with them loaded
PRELOAD = [
    "numpy",
    "medsr.io",
    "medsr.reports.render",
    "medsr.service.decode",
    "pydicom",
    "nibabel",
    "tifffile",
    "PIL.Image",
]


class DecodeTimeoutError(CorruptInputError):
    """The file took longer than the server allows to read (a malformed or hostile file)."""

    http_status = 422


@dataclass
class Decoded:
    """What the service needs of a decoded upload."""

    image: MedImage
    info: dict[str, Any]  # ImageInfo fields (image_info)
    window: tuple[float, float]
    series: str  # hashed SeriesInstanceUID or "-" (for logs)


def _series_hash(image: MedImage) -> str:
    datasets = image.meta.get("datasets") or []
    uid = getattr(datasets[0], "SeriesInstanceUID", None) if datasets else None
    if not uid:
        return "-"
    from medsr.io.dicom import series_key

    return series_key(str(uid))


def _child(conn: Any, loader: Callable[..., MedImage], source: str, npy: str, name: str) -> None:
    """Child process: decode ``source``, save the pixels to ``npy``, send the rest back."""
    try:
        from medsr.reports.render import default_window
        from medsr.service.jobs import image_info

        image = loader(source)
        np.save(npy, image.array)
        fields = {f.name: getattr(image, f.name) for f in dataclasses.fields(image)}
        fields.pop("array")
        payload = (
            "ok",
            fields,
            image_info(image),
            default_window(image),
            _series_hash(image),
        )
        del image
    except MedSRError as exc:
        payload = ("error", exc)
    except MemoryError:
        payload = ("error", InputTooLargeError(f"'{name}' is too large to read on this server"))
    except BaseException as exc:  # a reader bug (even a Rust panic) is a file it cannot read
        payload = ("error", CorruptInputError(f"'{name}' could not be read ({type(exc).__name__})"))
    try:
        conn.send(payload)
    except Exception as exc:  # e.g. an exception that does not pickle
        conn.send(
            ("error", CorruptInputError(f"'{name}' could not be read ({type(exc).__name__})"))
        )
    finally:
        conn.close()


def _context() -> multiprocessing.context.BaseContext:
    methods = multiprocessing.get_all_start_methods()
    if "forkserver" in methods:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        return ctx
    return multiprocessing.get_context("spawn")


class UploadDecoder:
    """Runs :func:`medsr.io.load_image` (or ``loader``) in a killable child process."""

    def __init__(self, timeout_s: float = 60.0, loader: Callable[..., MedImage] | None = None):
        if loader is None:
            from medsr.io import load_image as loader
        self.timeout_s = float(timeout_s)
        self.loader = loader
        self._ctx = _context()
        self._lock = threading.Lock()
        self._children: set[Any] = set()
        self._closed = False

    def decode(self, source: Path, npy: Path, name: str) -> Decoded:
        """Read ``source`` (``name`` is what messages call it); the pixels also land in ``npy``."""
        receiver, sender = self._ctx.Pipe(duplex=False)
        proc = self._ctx.Process(
            target=_child,
            args=(sender, self.loader, str(source), str(npy), name),
            name="medsr-decode",
            daemon=True,
        )
        with self._lock:
            if self._closed:
                raise MedSRError("the server is shutting down")
            proc.start()
            self._children.add(proc)
        sender.close()
        try:
            if not receiver.poll(self.timeout_s):
                log.warning("upload decoding timed out after %.0f s; child killed", self.timeout_s)
                raise DecodeTimeoutError(
                    f"'{name}' could not be read within {self.timeout_s:g} s; the file is "
                    "probably malformed"
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
            if hasattr(proc, "close") and proc.exitcode is not None:
                proc.close()
        if payload[0] == "error":
            raise payload[1]
        _, fields, info, window, series = payload
        image = MedImage(np.load(npy), **fields)
        return Decoded(image=image, info=info, window=tuple(window), series=series)

    def close(self) -> None:
        """Kill every child still decoding (their requests get a 422 at once)."""
        with self._lock:
            self._closed = True
            children = list(self._children)
        for proc in children:
            if proc.is_alive():
                proc.kill()
