"""Errors of the PACS (DICOMweb) bridge; all are :class:`~medsr.errors.MedSRError` subclasses.

Messages name the server by its URL without credentials, a source study/series/instance by the
8-character key of its UID (:func:`medsr.pacs.client.uid_key`; never the UID, a patient name or
ID: messages end up in logs), a derived series medsr made by its UID, and say what to do next.
"""

from __future__ import annotations

from medsr.errors import InvalidParameterError, MedSRError, NotAnImageError


class PacsError(MedSRError):
    """The DICOMweb server answered something medsr cannot use (an unexpected HTTP status...)."""

    http_status = 502


class PacsUnreachableError(PacsError):
    """No answer from the server: connection refused, DNS failure, TLS failure or timeout."""

    http_status = 504


class PacsAuthError(PacsError):
    """The server refused the credentials (HTTP 401/403)."""

    http_status = 502


class PacsNotFoundError(PacsError):
    """The study or series UID is not on the server (or the URL is not a DICOMweb root)."""

    http_status = 404


class PacsInvalidUIDError(PacsError, InvalidParameterError):
    """A study/series UID that is not a valid DICOM UID (digits and dots, at most 64 chars)."""

    http_status = 422


class PacsNotAnImageError(PacsError, NotAnImageError):
    """The series holds no image to super-resolve (SR, SEG, presentation state, waveform...)."""

    http_status = 422


class PacsStoreError(PacsError):
    """STOW-RS could not store every instance of a derived series, even after retries.

    Attributes:
        series_uid: the derived series that was being stored.
        failed: ``{SOPInstanceUID: reason}`` of the instances that were not stored.
        removed: the partial series was deleted again (nothing is left in the PACS).
        unreachable: the server stopped answering (connection refused or reset, timeout), so
            the partial series could not be deleted and may be left in the PACS.
    """

    http_status = 502

    def __init__(
        self,
        message: str,
        *,
        series_uid: str = "",
        failed: dict[str, str] | None = None,
        removed: bool = False,
        unreachable: bool = False,
    ) -> None:
        super().__init__(message)
        self.series_uid = series_uid
        self.failed = dict(failed or {})
        self.removed = removed
        self.unreachable = unreachable


class PacsInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped the storing of a derived series; the message says whether the instances
    stored so far were deleted again or which partial series may be left in the PACS.

    A :class:`KeyboardInterrupt` (the run stops, as at any Ctrl-C), not a
    :class:`~medsr.errors.MedSRError`: ``medsr pacs`` prints it (``interrupted while storing …``)
    and exits 130.
    """

    def __init__(self, message: str, *, series_uid: str = "", removed: bool = False) -> None:
        super().__init__(message)
        self.series_uid = series_uid
        self.removed = removed


__all__ = [
    "PacsAuthError",
    "PacsError",
    "PacsInterrupted",
    "PacsInvalidUIDError",
    "PacsNotAnImageError",
    "PacsNotFoundError",
    "PacsStoreError",
    "PacsUnreachableError",
]
