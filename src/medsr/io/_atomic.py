"""Write-then-rename so a failed write never leaves a half-written output behind."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from medsr.errors import InvalidParameterError, OutputExistsError


def _default_mode(directory: bool = False) -> int:
    """Permissions a plain ``open()``/``mkdir`` would give (mkstemp/mkdtemp use 0600/0700)."""
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask


def check_output(path: str | os.PathLike[str], overwrite: bool) -> Path:
    """Refuse an existing output unless ``overwrite``; return the path."""
    p = Path(path)
    if p.exists() and not overwrite:
        raise OutputExistsError(f"output '{p}' already exists; pass --overwrite to replace it")
    return p


def check_not_input(input_path: str | os.PathLike[str], output: str | os.PathLike[str]) -> None:
    """Refuse to write ``output`` when it is ``input_path`` itself (inputs are never modified,
    ``--overwrite`` or not)."""
    if Path(input_path).resolve() == Path(output).resolve():
        raise InvalidParameterError("the output must not be the input (inputs are never modified)")


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary file path beside ``path``; rename it onto ``path`` only on success.

    The temporary name keeps the suffixes of ``path`` (``.nii.gz``...) so writers that choose
    encoders by suffix behave the same.
    """
    target = check_output(path, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(target.suffixes) or ".tmp"
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.stem.split('.')[0]}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, _default_mode())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; move it to ``path`` only on success."""
    target = check_output(path, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
        os.chmod(tmp, _default_mode(directory=True))
        if target.exists():
            backup = target.with_name(f".{target.name}.old")
            os.replace(target, backup)
            os.replace(tmp, target)
            shutil.rmtree(backup, ignore_errors=True) if backup.is_dir() else backup.unlink()
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


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
