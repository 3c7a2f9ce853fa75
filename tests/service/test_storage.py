"""Safe extraction of uploaded zip archives (no web server needed)."""

from __future__ import annotations

import io
import stat
import zipfile

import pytest

from medsr.errors import CorruptInputError
from medsr.service.storage import (
    ArchiveTooLargeError,
    UnsafeArchiveError,
    ZipLimits,
    is_zip,
    safe_extract_zip,
    zip_folder,
)


def _zip(tmp_path, entries, name="a.zip"):
    path = tmp_path / name
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for info, data in entries:
            zf.writestr(info, data)
    return path


def test_extracts_nested_regular_files(tmp_path):
    path = _zip(tmp_path, [("s/IM1.dcm", b"a"), ("s/sub/IM2.dcm", b"bb"), ("s/", b"")])
    assert is_zip(path)
    assert safe_extract_zip(path, tmp_path / "out") == 2
    assert (tmp_path / "out/s/sub/IM2.dcm").read_bytes() == b"bb"


def test_symlink_member_rejected(tmp_path):
    link = zipfile.ZipInfo("s/link.dcm")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    path = _zip(tmp_path, [(link, "/etc/passwd")])
    with pytest.raises(UnsafeArchiveError, match="link"):
        safe_extract_zip(path, tmp_path / "out")


@pytest.mark.parametrize(
    "name", ["../x.dcm", "/x.dcm", "a/../../x.dcm", "a\\..\\..\\x.dcm", "C:\\x.dcm"]
)
def test_traversal_rejected_before_writing(tmp_path, name):
    path = _zip(tmp_path, [("ok.dcm", b"1"), (name, b"2")])
    with pytest.raises(UnsafeArchiveError):
        safe_extract_zip(path, tmp_path / "out")
    assert not (tmp_path / "out" / "ok.dcm").exists()  # checked before anything is written
    assert not (tmp_path / "x.dcm").exists()


def test_declared_size_is_not_trusted(tmp_path):
    """A member whose central directory under-states its size is stopped while decompressing."""
    data = b"\0" * 100_000
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.dcm", data)
    raw = bytearray(buf.getvalue())
    # patch the uncompressed size (central directory, offset 24 in the record) to 10 bytes
    cd = raw.rfind(b"PK\x01\x02")
    raw[cd + 24 : cd + 28] = (10).to_bytes(4, "little")
    path = tmp_path / "lie.zip"
    path.write_bytes(bytes(raw))
    with pytest.raises((ArchiveTooLargeError, CorruptInputError)):
        safe_extract_zip(path, tmp_path / "out", ZipLimits(max_total_bytes=50_000))


def test_ratio_limit_only_above_floor(tmp_path):
    zeros = _zip(tmp_path, [("z.dcm", b"\0" * 200_000)])
    assert safe_extract_zip(zeros, tmp_path / "small") == 1  # tiny archives may compress well
    with pytest.raises(ArchiveTooLargeError, match="ratio"):
        safe_extract_zip(zeros, tmp_path / "out", ZipLimits(max_ratio=10, ratio_floor_bytes=1000))


def test_not_a_zip(tmp_path):
    path = tmp_path / "bad.zip"
    path.write_bytes(b"PK\x03\x04" + b"garbage" * 10)
    with pytest.raises(CorruptInputError):
        safe_extract_zip(path, tmp_path / "out")


def test_zip_folder_round_trip(tmp_path):
    src = tmp_path / "series"
    (src / "sub").mkdir(parents=True)
    (src / "IM1.dcm").write_bytes(b"1")
    (src / "sub" / "IM2.dcm").write_bytes(b"2")
    out = zip_folder(src, tmp_path / "r.zip", "r")
    with zipfile.ZipFile(out) as zf:
        assert sorted(zf.namelist()) == ["r/IM1.dcm", "r/sub/IM2.dcm"]


def test_stale_private_roots_of_killed_servers_are_removed(tmp_path):
    import os
    import subprocess
    import sys

    from medsr.service.storage import OWNER_FILE, TEMP_PREFIX, _owner, remove_stale_roots

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    stale = tmp_path / f"{TEMP_PREFIX}dead"
    (stale / ("0" * 32)).mkdir(parents=True)
    ns = _owner().partition(" ")[2]
    (stale / OWNER_FILE).write_text(f"{dead.stdout.strip()} {ns}")
    live = tmp_path / f"{TEMP_PREFIX}live"
    live.mkdir()
    (live / OWNER_FILE).write_text(f"{os.getppid()} {ns}")
    elsewhere = tmp_path / f"{TEMP_PREFIX}other-container"  # its pids are not ours to judge
    elsewhere.mkdir()
    (elsewhere / OWNER_FILE).write_text(f"{dead.stdout.strip()} pid:[1]")
    other = tmp_path / f"{TEMP_PREFIX}no-owner-file"
    other.mkdir()
    assert remove_stale_roots(tmp_path) == 1
    assert not stale.exists() and live.exists() and other.exists() and elsewhere.exists()


def test_a_given_work_dir_keeps_its_permissions_and_gets_a_private_folder(tmp_path):
    """`medsr serve --work-dir DIR` on a folder of the user's: DIR's mode is left as it is
    (it was chmodded to 0700); the jobs go in a private folder of the service's inside it,
    removed on close, and a killed server's folder there goes when the next one starts."""
    import os
    import subprocess
    import sys

    from medsr.service.storage import OWNER_FILE, TEMP_PREFIX, Storage, _owner

    work = tmp_path / "mine"
    work.mkdir()
    os.chmod(work, 0o755)
    (work / "notes.txt").write_text("the user's")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    stale = work / f"{TEMP_PREFIX}killed"
    (stale / "jobs" / ("0" * 32)).mkdir(parents=True)
    (stale / OWNER_FILE).write_text(f"{dead} {_owner().partition(' ')[2]}")

    store = Storage(work)
    assert stat.S_IMODE(work.stat().st_mode) == 0o755
    assert not stale.exists()
    assert store.root.parent.parent == work and store.root.parent.name.startswith(TEMP_PREFIX)
    for private in (store.root, store.root.parent):
        assert stat.S_IMODE(private.stat().st_mode) == 0o700
    job = store.create("a" * 32)
    assert job.parent == store.root and stat.S_IMODE(job.stat().st_mode) == 0o700
    store.close()
    assert sorted(p.name for p in work.iterdir()) == ["notes.txt"]
    assert stat.S_IMODE(work.stat().st_mode) == 0o755


def test_serve_ready_line_says_where_job_files_are(tmp_path, caplog):
    """The ready line does not call the user's folder private; nor does starting the app
    change the folder's permissions."""
    import logging
    import os

    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from medsr.service.app import Settings, create_app

    work = tmp_path / "mine"
    work.mkdir()
    os.chmod(work, 0o750)
    with caplog.at_level(logging.INFO, logger="medsr"):
        with TestClient(create_app(Settings(work_dir=work, pretrained=False))):
            assert stat.S_IMODE(work.stat().st_mode) == 0o750
    ready = [r.getMessage() for r in caplog.records if "ready" in r.getMessage()]
    assert ready and "job files in a private folder, inside --work-dir" in ready[0], ready
    assert "work dir is private" not in caplog.text
    assert list(work.iterdir()) == [] and stat.S_IMODE(work.stat().st_mode) == 0o750
