"""Errors raised by medsr.

Every bad input raises a :class:`MedSRError` subclass whose message a clinician can act on
("the file is empty", "this DICOM object is a segmentation, not an image"). The CLI prints
``error: <message>`` and exits with status 2; the web service maps them to 4xx responses.
Messages never contain patient identifiers.
"""

from __future__ import annotations

import re


class MedSRError(Exception):
    """Base class of every error medsr raises on purpose."""

    #: HTTP status the web service answers with for this error.
    http_status: int = 400


class InputNotFoundError(MedSRError):
    """The input path does not exist."""

    http_status = 404


class UnreadableInputError(MedSRError):
    """The input exists but may not be read (permissions)."""

    http_status = 403


class EmptyInputError(MedSRError):
    """The input file has zero bytes or a folder holds no readable image."""

    http_status = 422


class UnsupportedFormatError(MedSRError):
    """The content is not a format medsr reads (sniffed from the bytes, not the suffix)."""

    http_status = 415


class CorruptInputError(MedSRError):
    """The file claims a supported format but cannot be decoded (truncated, bad header)."""

    http_status = 422


class InvalidHeaderError(CorruptInputError):
    """The header holds values that make no physical sense (spacing ≤ 0, slope 0, NaN...)."""


class InputTooLargeError(MedSRError):
    """The image would need more memory than the configured ceiling (``MEDSR_MAX_PIXELS``)."""

    http_status = 413


class NotAnImageError(MedSRError):
    """A DICOM object without pixel data, or a non-image SOP class (SEG, SR, RT...)."""

    http_status = 422


class UnsupportedTransferSyntaxError(MedSRError):
    """Pixel data compressed with a transfer syntax no installed decoder handles."""

    http_status = 415


class SeriesMismatchError(MedSRError):
    """A folder mixes series, orientations, spacings or image sizes.

    ``stacks``: where a series holds several stacks and none was chosen (or the one asked for
    cannot be read), the reader's list of them (:func:`medsr.io.dicom.stacks.stack_choices`);
    where a folder holds several series and none was chosen, its series (``number`` ``None``),
    for front ends that offer the choice (the web page); ``None`` otherwise."""

    http_status = 422
    stacks: list[dict[str, object]] | None = None


class InvalidParameterError(MedSRError):
    """A parameter is out of range (scale, model name, device...)."""

    http_status = 422


class OutputExistsError(MedSRError):
    """The output path exists and ``overwrite`` was not requested."""

    http_status = 409


class OutputWriteError(MedSRError):
    """The output cannot be written where asked (a folder without write permission, a full or
    read-only disk); checked before the work where it can be."""

    http_status = 500


class UnknownModelError(InvalidParameterError):
    """No model is registered under that name."""


class MedSRWarning(UserWarning):
    """Something in the input was questionable but medsr could go on (a documented fallback)."""


class NoDataStoredWarning(MedSRWarning):
    """An output format without a way to say "no data" (PNG, TIFF: integers only) holds pixels
    where the source held none (NaN): they are stored as a stated value, which the output's
    sidecar records (:func:`medsr.io.raster.write_raster`)."""


def scrub(exc: BaseException) -> str:
    """``Type: message`` of an exception, without quoted values (which could hold patient data).

    Only the first line is kept, at most 200 characters.
    """
    msg = re.sub(r"'[^']*'|\"[^\"]*\"", "…", str(exc)).strip()
    msg = msg.splitlines()[0] if msg else ""
    if len(msg) > 200:
        msg = msg[:200] + "…"
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def is_fatal(exc: BaseException) -> bool:
    """Exceptions that must never be turned into an input error: interrupts, exit, memory."""
    return isinstance(exc, KeyboardInterrupt | SystemExit | GeneratorExit | MemoryError)


def positive_number(value: object, what: str, unit: str) -> float:
    """``value`` as a finite float > 0, or one clear :class:`InvalidParameterError`
    (``"<what> must be a number of <unit>"`` / ``"... must be more than 0 <unit>"``)."""
    import math

    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InvalidParameterError(f"{what} must be a number of {unit}, got {value!r}") from None
    if not math.isfinite(number) or number <= 0:
        raise InvalidParameterError(f"{what} must be more than 0 {unit}, got {value!r}")
    return number


def whole_number(value: object, what: str, *, least: int) -> int | None:
    """``value`` as an ``int`` of at least ``least`` (``None`` stays ``None``: the default), or one
    clear :class:`InvalidParameterError` (``"<what> must be a whole number of at least <least>"``):
    a bool, a fraction, NaN or a string is not a count; a NumPy integer is."""
    import math
    import numbers

    if value is None:
        return None
    number = float(value) if isinstance(value, numbers.Real) else math.nan
    if isinstance(value, bool) or not number.is_integer() or number < least:
        raise InvalidParameterError(
            f"{what} must be a whole number of at least {least}, got {value!r}"
        )
    return int(number)
