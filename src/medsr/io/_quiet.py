"""Keep library chatter off the console while reading; keep it for the error message instead.

pydicom, tifffile, nibabel and Pillow report oddities through :mod:`warnings` or :mod:`logging`,
which would print *before* medsr's own ``error: …`` line (or print noise for inputs that read
fine). :func:`library_messages` collects both while a reader runs; the caller decides what to
keep (the first message goes into a generic error, all of them into ``meta["reader_messages"]``).

Thread-safe by construction, because the web service reads uploads on several threads at once:
no :class:`warnings.catch_warnings` (which swaps process-wide state); instead one process-wide
``warnings.showwarning`` hook and one logging handler route each message to the innermost
:func:`library_messages` block *of the thread that raised it*. Messages from threads that are
not reading, and medsr's own :class:`~medsr.errors.MedSRWarning`, go where they went before.
Warning filters are left alone: what a filter hides stays hidden, what it shows is collected.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import warnings
from collections.abc import Iterator
from typing import Any

from medsr.errors import CorruptInputError, MedSRError, MedSRWarning

#: loggers of the libraries the readers call
LIBRARY_LOGGERS = ("pydicom", "tifffile", "nibabel", "PIL", "imagecodecs", "openjpeg", "pylibjpeg")

_lock = threading.Lock()
_depth = 0
_saved: dict[str, tuple[bool, list[logging.Handler]]] = {}
_local = threading.local()
_previous_showwarning: Any = None


def _current() -> list[str] | None:
    stack = getattr(_local, "stack", None)
    return stack[-1] if stack else None


class _Collector(logging.Handler):
    """Sends each record to the innermost :func:`library_messages` block of the current thread;
    records of other threads go to the handlers the logger had before."""

    def emit(self, record: logging.LogRecord) -> None:
        target = _current()
        if target is not None:
            try:
                target.append(f"{record.name.split('.')[0]}: {record.getMessage()}")
            except Exception:  # a malformed record must not break reading
                target.append(f"{record.name.split('.')[0]}: {record.msg!s}")
            return
        name: str | None = record.name
        while name:  # replay what the hooked loggers would have done (their handlers, propagation)
            saved = _saved.get(name)
            if saved is not None:
                propagate, handlers = saved
                for h in handlers:
                    if record.levelno >= h.level:
                        h.handle(record)
                if not propagate:
                    return
            name = name.rpartition(".")[0] or None
        logging.getLogger().handle(record)


_handler = _Collector(level=logging.WARNING)


def _showwarning(
    message: Any,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: Any = None,
) -> None:
    target = _current()
    if target is not None and not issubclass(category, MedSRWarning):
        target.append(f"{category.__name__}: {message}")
        return
    previous = _previous_showwarning or warnings._showwarning_orig  # type: ignore[attr-defined]
    previous(message, category, filename, lineno, file, line)


def _library_loggers() -> list[logging.Logger]:
    """The library loggers and every child logger they created (nibabel.global has a handler)."""
    children = tuple(root + "." for root in LIBRARY_LOGGERS)  # one C call per logger name
    names = set(LIBRARY_LOGGERS)
    names.update(
        name for name in list(logging.root.manager.loggerDict) if name.startswith(children)
    )
    return [logging.getLogger(name) for name in sorted(names)]


def _install() -> None:
    """Route the library loggers and warnings to the collectors; a nested call also takes
    loggers created since (a library imported inside the block, e.g. ``nibabel.global``)."""
    global _depth, _previous_showwarning
    with _lock:
        if warnings.showwarning is not _showwarning:
            _previous_showwarning = warnings.showwarning
            warnings.showwarning = _showwarning
        for logger in _library_loggers():
            if logger.name in _saved:
                continue
            _saved[logger.name] = (logger.propagate, list(logger.handlers))
            for h in list(logger.handlers):
                logger.removeHandler(h)
            logger.propagate = False
            logger.addHandler(_handler)
        _depth += 1


def _uninstall() -> None:
    global _depth
    with _lock:
        _depth -= 1
        if _depth == 0:
            for name, (propagate, handlers) in list(_saved.items()):
                logger = logging.getLogger(name)
                logger.removeHandler(_handler)
                for h in handlers:
                    logger.addHandler(h)
                logger.propagate = propagate
            _saved.clear()
            # the warnings hook stays: it passes everything on when no thread is reading


@contextlib.contextmanager
def library_messages() -> Iterator[list[str]]:
    """Collect the warnings and library log records (WARNING and above) of this thread.

    Nothing is printed; the yielded list holds ``"source: message"`` strings in order. A nested
    block's messages are also added to the enclosing block's list.
    """
    messages: list[str] = []
    stack = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    stack.append(messages)
    _install()
    try:
        yield messages
    finally:
        _uninstall()
        stack.pop()
        if stack:
            stack[-1].extend(messages)


def message_count() -> int | None:
    """How many messages the innermost :func:`library_messages` block of this thread holds so
    far (``None`` outside one): a caller can tell whether a step of its own said anything."""
    target = _current()
    return None if target is None else len(target)


def scrubbed(messages: list[str], limit: int = 10) -> list[str]:
    """Messages without quoted values (patient data), first line only, deduplicated (pydicom
    both logs and warns the same text: kept once)."""
    out: list[str] = []
    seen: set[str] = set()
    for m in messages:
        text = re.sub(r"'[^']*'|\"[^\"]*\"", "…", str(m)).strip()
        text = text.splitlines()[0][:200] if text else ""
        body = text.split(": ", 1)[-1]
        if text and body not in seen:
            seen.add(body)
            out.append(text)
        if len(out) >= limit:
            break
    return out


def with_details(exc: MedSRError, messages: list[str]) -> MedSRError:
    """A generic corrupt-input error with the first library message appended.

    Only a plain :class:`~medsr.errors.CorruptInputError` that quotes a library exception (the
    "cannot be decoded (ValueError: …)" family) gains the detail; errors that say precisely what
    is wrong (invalid header values, sizes that disagree, unsupported syntax...) stay as they are.
    """
    text = str(exc)
    if type(exc) is not CorruptInputError or not _QUOTES_EXCEPTION.search(text):
        return exc
    details = scrubbed(messages, limit=1)
    if not details or details[0] in text or "[reader:" in text:
        return exc
    return CorruptInputError(f"{text} [reader: {details[0]}]")


_QUOTES_EXCEPTION = re.compile(r"\b[A-Z]\w*(Error|Exception|Warning)\b")
