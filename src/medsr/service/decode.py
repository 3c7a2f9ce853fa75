"""Decode an untrusted upload in a child process, under a time limit.

The web service never decodes in a request thread: :class:`UploadDecoder` is an
:class:`medsr.io.isolated.IsolatedReader` (a killable child process per file; ``medsr batch``
reads its items the same way) whose child also computes what the service shows of the upload
(the job's summary and default window, the hashed series UID), and which leaves the pixels as
``input.npy`` in the job folder (the preview copy the service keeps anyway). A child still
running after ``timeout_s`` is killed and the upload refused (422); one that dies is a corrupt
file (422). :meth:`UploadDecoder.close` kills the children still running (shutdown).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medsr.image import MedImage
from medsr.io.isolated import PRELOAD as _IO_PRELOAD
from medsr.io.isolated import DecodeTimeoutError, IsolatedReader

__all__ = ["PRELOAD", "DecodeTimeoutError", "Decoded", "UploadDecoder"]

log = logging.getLogger("medsr.service")

#: imported once by the fork server, so every decode child starts with them loaded
PRELOAD = [*_IO_PRELOAD, "medsr.reports.render", "medsr.service.decode"]


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


def _describe(image: MedImage) -> tuple[dict[str, Any], tuple[float, float], str]:
    """In the child: the upload's summary, default window and hashed series UID."""
    from medsr.reports.render import default_window
    from medsr.service.jobs import image_info

    return image_info(image), default_window(image), _series_hash(image)


class UploadDecoder(IsolatedReader):
    """Runs :func:`medsr.io.load_image` (or ``loader``) in a killable child process."""

    def __init__(self, timeout_s: float = 60.0, loader: Any = None) -> None:
        super().__init__(timeout_s, loader, preload=PRELOAD)

    def decode(self, source: Path, npy: Path, name: str, series: str | None = None) -> Decoded:
        """Read ``source`` (``name`` is what messages call it; ``series``: the series or stack
        to read, as ``load_image(series_uid=...)`` takes it); the pixels also land in ``npy``."""
        options = {"series_uid": series} if series else None
        image, (info, window, series_hash) = self.read(
            source, name, npy=npy, describe=_describe, options=options
        )
        return Decoded(image=image, info=info, window=tuple(window), series=series_hash)
