"""medsr.io.isolated: reading in a child process under a time limit (web service and batch)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from medsr.io import load_image
from medsr.io.isolated import DecodeTimeoutError, IsolatedReader
from tests.io import _in_child
from tests.io.conftest import dicom_corpus_path

REPO = Path(__file__).resolve().parents[2]


def test_reads_what_load_image_reads():
    path = dicom_corpus_path("CT_small.dcm")
    reader = IsolatedReader(60)
    image, described = reader.read(path, "CT_small.dcm", describe=_in_child.array_shape)
    direct = load_image(path)
    np.testing.assert_array_equal(image.array, direct.array)
    assert image.spacing == direct.spacing and image.modality == direct.modality == "CT"
    np.testing.assert_array_equal(image.affine, direct.affine)
    assert image.meta["datasets"][0].SOPInstanceUID == direct.meta["datasets"][0].SOPInstanceUID
    assert described == direct.array.shape
    assert not reader._children


def test_a_spinning_reader_is_killed_at_the_limit(tmp_path):
    src = tmp_path / "x.png"
    src.write_bytes(b"")
    reader = IsolatedReader(1, loader=_in_child.spin)
    t0 = time.monotonic()
    with pytest.raises(DecodeTimeoutError, match=r"'x.png' could not be read within 1 s"):
        reader.read(src, "x.png")
    assert time.monotonic() - t0 < 30  # 1 s once the fork server runs (it may start first)
    assert not reader._children
    reader.close()
    with pytest.raises(Exception, match="stopped"):
        reader.read(src, "x.png")


def test_the_readers_warnings_come_back_to_the_caller(tmp_path):
    """The reader's warnings in the child were printed on the child's stderr (Python's raw
    format, naming the path the child was given: for ``medsr batch`` a private folder of
    links), out of the caller's reach. Now they come back with the image: into ``notes`` where
    the caller gives a list (``medsr batch`` puts them in its report), else warned again in the
    caller's process, as a read there warns."""
    import pydicom

    from medsr.errors import MedSRWarning

    ds = pydicom.dcmread(dicom_corpus_path("CT_small.dcm"))
    ds.SliceThickness = -2
    ds.save_as(tmp_path / "thin.dcm")
    reader = IsolatedReader(60)
    notes: list[str] = []
    image, _ = reader.read(tmp_path / "thin.dcm", "thin.dcm", notes=notes)
    assert image.spatial_shape == (1, 128, 128)
    assert len(notes) == 1 and notes[0].startswith("SliceThickness is -2 mm, not a valid")
    with pytest.warns(MedSRWarning, match="SliceThickness is -2 mm, not a valid") as caught:
        reader.read(tmp_path / "thin.dcm", "thin.dcm")
    assert [str(w.message) for w in caught if issubclass(w.category, MedSRWarning)] == notes


ORPHAN = textwrap.dedent(
    """
    import os, signal, sys, threading, time
    from medsr.io.isolated import IsolatedReader
    from tests.io import _in_child

    if __name__ == "__main__":
        src = sys.argv[1]
        reader = IsolatedReader(1, loader=_in_child.spin)
        threading.Thread(target=reader.read, args=(src, "x"), daemon=True).start()
        while not os.path.exists(src + ".pid"):
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGKILL)  # the parent dies before it can kill the child
    """
)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX signals")
def test_a_child_does_not_outlive_a_killed_parent(tmp_path):
    script, src = tmp_path / "orphan.py", tmp_path / "x.png"
    script.write_text(ORPHAN)
    src.write_bytes(b"")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    proc = subprocess.run([sys.executable, str(script), str(src)], env=env, timeout=120)
    assert proc.returncode == -9
    pid = int(Path(f"{src}.pid").read_text())
    deadline = time.monotonic() + 30  # the child ends itself ~5 s after its time limit
    while time.monotonic() < deadline and _running(pid):
        time.sleep(0.2)
    assert not _running(pid), "the decode child outlived its killed parent"


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
