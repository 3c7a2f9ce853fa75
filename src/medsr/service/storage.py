"""Per-job temporary folders, retention clean-up and safe extraction of uploaded archives.

Every job owns one folder in the service's private folder (:class:`Storage`); nothing a job
writes lives anywhere else, so deleting the folder deletes the upload, the result and the
previews.
Folders of finished jobs are removed after the retention period (see :class:`Storage`).

Uploaded zip archives are untrusted: :func:`safe_extract_zip` rejects absolute paths, ``..``
components, links and device files (path traversal), and stops before writing when the
archive declares, or turns out to hold, more files, more bytes or a higher compression ratio
than allowed (zip bombs). Sizes are counted while decompressing, never taken on trust from the
archive's directory.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from medsr.errors import CorruptInputError, MedSRError

ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


class UnsafeArchiveError(CorruptInputError):
    """A zip member would be written outside the extraction folder (or is a link/device)."""

    http_status = 422


class ArchiveTooLargeError(MedSRError):
    """A zip expands beyond the configured limits (total size, file count, compression ratio)."""

    http_status = 413


@dataclass(frozen=True)
class ZipLimits:
    """Limits for :func:`safe_extract_zip`."""

    max_total_bytes: int = 2 * 1024**3
    max_files: int = 5000
    max_ratio: float = 200.0
    #: archives smaller than this uncompressed are never rejected on ratio alone
    ratio_floor_bytes: int = 10 * 1024**2


def is_zip(path: str | os.PathLike[str]) -> bool:
    """True when the file starts with a zip local-header or empty-archive signature."""
    with open(path, "rb") as fh:
        return fh.read(4) in ZIP_MAGIC


def _member_path(name: str) -> PurePosixPath:
    """The relative path a member may be extracted to; raise on any traversal attempt."""
    if "\x00" in name:
        raise UnsafeArchiveError(
            "the zip archive has a member name with a NUL byte; refusing to extract it"
        )
    norm = name.replace("\\", "/")
    if norm.startswith("/") or re.match(r"^[A-Za-z]:", norm):
        raise UnsafeArchiveError("the zip archive holds an absolute path; refusing to extract it")
    parts = [p for p in PurePosixPath(norm).parts if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise UnsafeArchiveError(
            "the zip archive holds a path outside its folder ('..'); refusing to extract it"
        )
    return PurePosixPath(*parts) if parts else PurePosixPath()


def safe_extract_zip(
    archive: str | os.PathLike[str], dest: str | os.PathLike[str], limits: ZipLimits = ZipLimits()
) -> int:
    """Extract regular files of ``archive`` into ``dest``; return the number of files written.

    Raises:
        UnsafeArchiveError: absolute or ``..`` paths, symbolic links, device files, encrypted
            members (422).
        ArchiveTooLargeError: too many files, too many bytes in total, or a suspicious
            compression ratio, declared or actual (413).
        CorruptInputError: not a readable zip (422).
    """
    dest_dir = Path(dest)
    dest_dir.mkdir(parents=True, exist_ok=True)
    root = dest_dir.resolve()
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CorruptInputError(
            f"the upload looks like a zip archive but cannot be read ({type(exc).__name__})"
        ) from None
    with zf:
        infos = zf.infolist()
        files = [i for i in infos if not i.is_dir()]
        if len(files) > limits.max_files:
            raise ArchiveTooLargeError(
                f"the zip archive holds {len(files)} files; the limit is {limits.max_files}"
            )
        declared = sum(i.file_size for i in files)
        compressed = sum(i.compress_size for i in files)
        _check_totals(declared, compressed, limits)
        targets: list[tuple[zipfile.ZipInfo, Path]] = []
        for info in infos:
            rel = _member_path(info.filename)
            mode = (info.external_attr >> 16) & 0xFFFF
            if mode and (
                stat.S_ISLNK(mode)
                or stat.S_ISCHR(mode)
                or stat.S_ISBLK(mode)
                or stat.S_ISFIFO(mode)
                or stat.S_ISSOCK(mode)
            ):
                raise UnsafeArchiveError(
                    "the zip archive holds a link or device file; refusing to extract it"
                )
            if info.flag_bits & 0x1:
                raise UnsafeArchiveError(
                    "the zip archive is encrypted; upload an unencrypted archive"
                )
            if info.is_dir() or not rel.parts:
                continue
            target = (root / rel).resolve()
            if root not in target.parents:
                raise UnsafeArchiveError(
                    "the zip archive holds a path outside its folder; refusing to extract it"
                )
            targets.append((info, target))
        written_total = 0
        for info, target in targets:
            target.parent.mkdir(parents=True, exist_ok=True)
            written = 0
            try:
                with zf.open(info) as src, open(target, "wb") as out:
                    while chunk := src.read(1024 * 1024):
                        written += len(chunk)
                        written_total += len(chunk)
                        # the directory's sizes are only claims: count the real bytes
                        if written > info.file_size or written_total > limits.max_total_bytes:
                            raise ArchiveTooLargeError(
                                "the zip archive expands beyond its declared size or the "
                                f"{_mb(limits.max_total_bytes)} limit"
                            )
                        out.write(chunk)
            except (zipfile.BadZipFile, EOFError, zlib.error) as exc:
                raise CorruptInputError(
                    f"the zip archive is corrupt ({type(exc).__name__})"
                ) from None
            except NotImplementedError:
                raise CorruptInputError(
                    "the zip archive uses a compression method medsr cannot read"
                ) from None
        _check_totals(written_total, compressed, limits)
        return len(targets)


def _mb(n: int) -> str:
    return f"{n / 1024**2:.0f} MB"


def _check_totals(total: int, compressed: int, limits: ZipLimits) -> None:
    if total > limits.max_total_bytes:
        raise ArchiveTooLargeError(
            f"the zip archive expands to {_mb(total)}; the limit is {_mb(limits.max_total_bytes)}"
        )
    if total > limits.ratio_floor_bytes and total > limits.max_ratio * max(compressed, 1):
        raise ArchiveTooLargeError(
            f"the zip archive has a compression ratio of {total / max(compressed, 1):.0f}:1 "
            f"(limit {limits.max_ratio:.0f}:1); this looks like a zip bomb"
        )


def zip_folder(
    folder: str | os.PathLike[str], archive: str | os.PathLike[str], arcroot: str
) -> Path:
    """Zip every file under ``folder`` into ``archive`` below the folder name ``arcroot``."""
    src = Path(folder)
    out = Path(archive)
    tmp = out.with_name(f".{out.name}.part")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for p in sorted(src.rglob("*")):
            if p.is_file():
                zf.write(p, str(PurePosixPath(arcroot) / p.relative_to(src).as_posix()))
    os.replace(tmp, out)
    return out


def safe_stem(filename: str | None, default: str = "image") -> str:
    """A file-system and header safe stem of an uploaded file name (suffixes removed)."""
    name = PurePosixPath((filename or "").replace("\\", "/")).name
    for suffix in (".nii.gz", ".zip", ".dcm", ".dicom", ".nii", ".png", ".tiff", ".tif", ".ima"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-")[:80]
    return stem or default


def safe_filename(filename: str | None, default: str = "upload") -> str:
    """The uploaded file's base name reduced to safe characters (for messages to the uploader)."""
    name = PurePosixPath((filename or "").replace("\\", "/")).name
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")[:100] or default


TEMP_PREFIX = "medsr-serve-"
OWNER_FILE = ".pid"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def _owner() -> str:
    """This process, as written in a private root: pid and pid namespace (a pid means nothing
    in another container sharing the same /tmp)."""
    try:
        ns = os.readlink("/proc/self/ns/pid")
    except OSError:
        import socket

        ns = socket.gethostname()
    return f"{os.getpid()} {ns}"


def remove_stale_roots(tmp: str | os.PathLike[str] | None = None) -> int:
    """Delete private work folders of servers that were killed (SIGKILL, power loss) before
    they could clean up: ours (same user, same pid namespace), named ``medsr-serve-*``, whose
    owner process is gone.
    Returns how many were removed."""
    removed = 0
    for d in Path(tmp or tempfile.gettempdir()).glob(TEMP_PREFIX + "*"):
        try:
            if d.is_symlink() or not d.is_dir() or d.stat().st_uid != os.getuid():
                continue
            pid_text, _, ns = (d / OWNER_FILE).read_text().strip().partition(" ")
            pid = int(pid_text)
        except (OSError, ValueError):
            continue
        if ns == _owner().partition(" ")[2] and pid != os.getpid() and not _alive(pid):
            shutil.rmtree(d, ignore_errors=True)
            removed += 1
    return removed


class Storage:
    """Job folders in a private folder of the service's own.

    The service makes a fresh folder ``medsr-serve-*`` (mode 0700, :func:`tempfile.mkdtemp`)
    holding its owner file and ``jobs/`` (:attr:`root`, 0700), where every job folder lives —
    in the system's temporary folder, or in ``root`` (``medsr serve --work-dir``) when given.
    A folder the user gives is created if missing and otherwise left as it is (its permissions
    are not changed: the privacy comes from the service's folder inside it). :meth:`close`
    removes the service's folder; left-overs of killed servers are removed when the next one
    starts in the same place (:func:`remove_stale_roots`).

    Args:
        root: the folder to make the service's folder in (``None``: the system's temporary
            folder).
    """

    def __init__(self, root: str | os.PathLike[str] | None = None):
        parent = None if root is None else Path(root)
        if parent is not None:
            parent.mkdir(parents=True, exist_ok=True)
        remove_stale_roots(parent)
        #: the service's private folder (its owner file and ``jobs/``)
        self.private = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=parent))
        (self.private / OWNER_FILE).write_text(_owner())
        #: the folder of the job folders
        self.root = self.private / "jobs"
        self.root.mkdir(mode=0o700)
        #: the folder given (``--work-dir``), or None
        self.work_dir = parent

    def job_dir(self, job_id: str) -> Path:
        if not re.fullmatch(r"[0-9a-f]{32}", job_id):
            raise ValueError("invalid job id")
        return self.root / job_id

    def create(self, job_id: str) -> Path:
        d = self.job_dir(job_id)
        d.mkdir(mode=0o700)  # in the private root only: never recreated once closed
        return d

    def remove(self, job_id: str) -> None:
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)

    def close(self) -> None:
        """Remove the service's folder (every job's files); a given work folder stays."""
        shutil.rmtree(self.private, ignore_errors=True)
