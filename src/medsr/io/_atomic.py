"""Write-then-rename so a failed write never leaves a half-written output behind."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

from medsr.errors import InvalidParameterError, OutputExistsError, OutputWriteError


def _default_mode(directory: bool = False) -> int:
    """Permissions a plain ``open()``/``mkdir`` would give (mkstemp/mkdtemp use 0600/0700)."""
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask


#: how the DICOM writer names the files of a series folder: ``IM00001.dcm`` … (at least this
#: many digits; :func:`series_file_name`)
_SERIES_PREFIX, _SERIES_DIGITS, _SERIES_SUFFIX = "IM", 5, ".dcm"
#: the files of a DICOM series folder medsr writes (:func:`series_file_name`): a folder that holds
#: anything else is not a previous output of medsr, and ``--overwrite`` never replaces it
SERIES_FILE = re.compile(rf"^{_SERIES_PREFIX}\d{{{_SERIES_DIGITS},}}{re.escape(_SERIES_SUFFIX)}$")
#: what an output path is: one ``file``; a DICOM ``series`` folder medsr writes whole (replaced
#: as a whole); a ``folder`` it writes its own files into (maps: only those files replaced)
OutputKind = Literal["file", "series", "folder"]


def series_file_name(index: int, count: int) -> str:
    """The name of file ``index`` (1-based) of a DICOM series folder of ``count`` files that
    medsr writes: ``IM00001.dcm`` …, zero-padded to :data:`_SERIES_DIGITS` digits or to
    ``count``'s, so that names sort in slice order; :data:`SERIES_FILE` matches every one."""
    width = max(_SERIES_DIGITS, len(str(count)))
    return f"{_SERIES_PREFIX}{index:0{width}d}{_SERIES_SUFFIX}"


def check_output(
    path: str | os.PathLike[str], overwrite: bool, kind: OutputKind | None = None
) -> Path:
    """Refuse an existing output unless ``overwrite``; return the path.

    Even with ``overwrite`` only what medsr would itself have written is replaced: a ``file``
    output replaces a regular file (never a folder, a device such as ``/dev/null`` or a
    socket); a ``series`` folder replaces a folder holding nothing but a series' ``IM…dcm``
    files (:data:`SERIES_FILE`), never a folder of other data nor a file; a ``folder`` output
    writes into an existing folder. ``kind=None``: a path with a suffix is a ``file``, one
    without a ``series`` (how :func:`medsr.pipeline.output_path_for` reads it). The parent
    folder must be writable (or creatable), so that a run never fails after its work is done.
    """
    p = Path(path)
    kind = kind or ("file" if p.suffix else "series")
    if os.path.lexists(p):
        if not overwrite:
            raise OutputExistsError(
                f"output '{p}' already exists; pass --overwrite (overwrite=True in Python) to replace it"
            )
        _check_replaceable(p, kind)
    check_writable(p if kind == "folder" and p.is_dir() else p.parent)
    return p


def _check_replaceable(p: Path, kind: OutputKind) -> None:
    """With ``--overwrite``: refuse to replace what medsr would not have written there."""
    if kind == "file":
        if not p.is_file():
            what = "a folder" if p.is_dir() else "not a regular file"
            raise InvalidParameterError(
                f"output '{p}' exists and is {what}; --overwrite replaces only a file: "
                "choose another output path"
            )
        return
    if not p.is_dir() or p.is_symlink():
        raise InvalidParameterError(
            f"output '{p}' exists and is not a folder; a DICOM series is written as a folder "
            "(or name one file, e.g. 'out.dcm'): choose another output path"
        )
    if kind == "series":
        try:
            foreign = [
                e.name
                for e in os.scandir(p)
                if not (e.is_file(follow_symlinks=False) and SERIES_FILE.match(e.name))
            ]
        except OSError as exc:
            raise InvalidParameterError(
                f"cannot read the output folder '{p}': {exc.strerror}"
            ) from None
        if foreign:
            raise InvalidParameterError(
                f"output folder '{p}' holds files medsr did not write (e.g. '{sorted(foreign)[0]}'); "
                "--overwrite replaces only a previous medsr series: choose another output path"
            )


def check_writable(folder: Path) -> None:
    """The nearest existing folder at or above ``folder`` must be a folder medsr may write in
    (the missing ones are created there); else one :class:`OutputWriteError`. Outputs and
    ``medsr serve --work-dir`` check it before any work."""
    d = folder if str(folder) else Path(".")
    while not os.path.lexists(d) and d != d.parent:
        d = d.parent
    if not d.is_dir():
        raise OutputWriteError(f"cannot write under '{d}': it is not a folder")
    if not os.access(d, os.W_OK | os.X_OK):
        raise OutputWriteError(f"cannot write to the folder '{d}': permission denied")


def check_not_input(input_path: str | os.PathLike[str], output: str | os.PathLike[str]) -> None:
    """Refuse to write ``output`` when it is ``input_path`` itself, or lies inside ``input_path``
    when that is a folder (a DICOM series): a series written into it (``medsr upscale series/
    series/x2``) became part of the input, which then held two series and read no more as it did
    (inputs are never modified, ``--overwrite`` or not)."""
    src, out = Path(input_path).resolve(), Path(output).resolve()
    if src == out:
        raise InvalidParameterError("the output must not be the input (inputs are never modified)")
    if src.is_dir() and out.is_relative_to(src):
        raise InvalidParameterError(
            f"the output '{output}' must not be inside the input folder '{input_path}': it would "
            "become part of the input (inputs are never modified); choose a path outside it"
        )


@contextlib.contextmanager
def _writing(target: Path, cleanup: Callable[[], object] | None = None) -> Iterator[None]:
    """Writing ``target``: on any failure ``cleanup`` first (the temporary removed); an
    ``OSError`` (a full or read-only disk, permissions changed since the check) then becomes one
    :class:`OutputWriteError` line, anything else goes on as it is."""
    try:
        yield
    except BaseException as exc:
        if cleanup is not None:
            cleanup()
        if isinstance(exc, OSError):
            why = exc.strerror or str(exc) or exc.__class__.__name__
            raise OutputWriteError(f"cannot write '{target}': {why}") from None
        raise


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary file path beside ``path``; rename it onto ``path`` only on success.

    The temporary name keeps the suffixes of ``path`` (``.nii.gz``...) so writers that choose
    encoders by suffix behave the same.
    """
    target = check_output(path, overwrite, "file")
    suffix = "".join(target.suffixes) or ".tmp"
    with _writing(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{target.stem.split('.')[0]}.", suffix=suffix, dir=target.parent
        )
    os.close(fd)
    tmp = Path(tmp_name)
    with _writing(target, cleanup=lambda: tmp.unlink(missing_ok=True)):
        yield tmp
        os.chmod(tmp, _default_mode())
        os.replace(tmp, target)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; move it to ``path`` only on success."""
    target = check_output(path, overwrite, "series")
    with _writing(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    with _writing(target, cleanup=lambda: shutil.rmtree(tmp, ignore_errors=True)):
        yield tmp
        os.chmod(tmp, _default_mode(directory=True))
        if target.exists():
            backup = target.with_name(f".{target.name}.old")
            os.replace(target, backup)
            os.replace(tmp, target)
            shutil.rmtree(backup, ignore_errors=True) if backup.is_dir() else backup.unlink()
        else:
            os.replace(tmp, target)


def stale_temporaries(path: str | os.PathLike[str], older_than: float) -> list[Path]:
    """Temporaries that :func:`atomic_file` / :func:`atomic_dir` left beside ``path`` when their
    process was killed (``SIGKILL`` skips the clean-up): ``.{stem}.XXXXXXXX{suffixes}`` files and
    ``.{name}.XXXXXXXX`` / ``.{name}.old`` folders last modified before ``older_than`` (epoch s)."""
    import re

    target = Path(path)
    folder = target.parent
    if not folder.is_dir():
        return []
    stem = re.escape(target.stem.split(".")[0])
    suffix = re.escape("".join(target.suffixes) or ".tmp")
    name = re.escape(target.name)
    patterns = (
        re.compile(rf"^\.{stem}\.[A-Za-z0-9_]{{8}}{suffix}$"),
        re.compile(rf"^\.{name}\.([A-Za-z0-9_]{{8}}|old)$"),
    )
    found = []
    for p in folder.iterdir():
        if any(pat.match(p.name) for pat in patterns):
            try:
                if p.lstat().st_mtime < older_than:
                    found.append(p)
            except OSError:
                continue
    return found


def remove_stale_temporaries(path: str | os.PathLike[str], older_than: float) -> int:
    """Delete :func:`stale_temporaries` of ``path``; return how many were removed."""
    n = 0
    for p in stale_temporaries(path, older_than):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        n += 1
    return n
