"""Errors raised by medsr.

Every bad input raises a :class:`MedSRError` subclass whose message a clinician can act on
("the file is empty", "this DICOM object is a segmentation, not an image"). The CLI prints
``error: <message>`` and exits with status 2; the web service maps them to 4xx responses.
Messages never contain patient identifiers.
"""

from __future__ import annotations


class MedSRError(Exception):
    """Base class of every error medsr raises on purpose."""

    #: HTTP status the web service answers with for this error.
    http_status: int = 400


class InputNotFoundError(MedSRError):
    """The input path does not exist."""

    http_status = 404


class EmptyInputError(MedSRError):
    """The input file has zero bytes or a folder holds no readable image."""

    http_status = 422


class UnsupportedFormatError(MedSRError):
    """The content is not a format medsr reads (sniffed from the bytes, not the suffix)."""

    http_status = 415


class CorruptInputError(MedSRError):
    """The file claims a supported format but cannot be decoded (truncated, bad header)."""

    http_status = 422


class NotAnImageError(MedSRError):
    """A DICOM object without pixel data, or a non-image SOP class (SEG, SR, RT...)."""

    http_status = 422


class UnsupportedTransferSyntaxError(MedSRError):
    """Pixel data compressed with a transfer syntax no installed decoder handles."""

    http_status = 415


class SeriesMismatchError(MedSRError):
    """A folder mixes series, orientations, spacings or image sizes."""

    http_status = 422


class InvalidParameterError(MedSRError):
    """A parameter is out of range (scale, model name, device...)."""

    http_status = 422


class OutputExistsError(MedSRError):
    """The output path exists and ``overwrite`` was not requested."""

    http_status = 409


class UnknownModelError(InvalidParameterError):
    """No model is registered under that name."""
