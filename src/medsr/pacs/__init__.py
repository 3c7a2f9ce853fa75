"""PACS bridge over DICOMweb: list series, upscale a series into a derived one, watch for new ones.

``medsr pacs list|upscale|watch`` on the command line; in Python::

    from medsr.pacs import list_series, upscale_series
    for s in list_series("http://localhost:8042/dicom-web", modality="CT", user="u", password="p"):
        print(s.series_uid, s.modality, s.instances)
    [result] = upscale_series(url, study_uid, series_uid, model="bicubic", scale=2)
    print(result.derived_series_uid)

Needs the ``pacs`` extra (``pip install medsr[pacs]``: dicomweb-client).
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "SeriesInfo": "bridge",
    "UpscaleResult": "bridge",
    "WatchSummary": "bridge",
    "list_series": "bridge",
    "parse_filters": "bridge",
    "parse_interval": "bridge",
    "upscale_series": "bridge",
    "watch": "bridge",
    "PacsClient": "client",
    "connect": "client",
    "PacsAuthError": "errors",
    "PacsError": "errors",
    "PacsInterrupted": "errors",
    "PacsInvalidUIDError": "errors",
    "PacsNotAnImageError": "errors",
    "PacsNotFoundError": "errors",
    "PacsStoreError": "errors",
    "PacsUnreachableError": "errors",
}


def __getattr__(name: str) -> Any:
    """Lazy exports: ``import medsr.pacs.cli`` must not import requests or dicomweb-client."""
    if name in _EXPORTS:
        import importlib

        value = getattr(importlib.import_module(f"medsr.pacs.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'medsr.pacs' has no attribute {name!r}")


__all__ = [
    "PacsAuthError",
    "PacsClient",
    "PacsError",
    "PacsInterrupted",
    "PacsInvalidUIDError",
    "PacsNotAnImageError",
    "PacsNotFoundError",
    "PacsStoreError",
    "PacsUnreachableError",
    "SeriesInfo",
    "UpscaleResult",
    "WatchSummary",
    "connect",
    "list_series",
    "parse_filters",
    "parse_interval",
    "upscale_series",
    "watch",
]
