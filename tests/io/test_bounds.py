"""House rule 4 for the readers and writers: a small hostile file costs bounded memory and time,
and an image too large for its output format is refused with a clear error, never a traceback.

Every bomb is built here, in ``tmp_path``, and kept small by lowering ``MEDSR_MAX_PIXELS``.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pydicom
import pytest

import medsr
from medsr.errors import CorruptInputError, InputTooLargeError
from tests.io.conftest import dicom_corpus_path

DEFLATED = "1.2.840.10008.1.2.1.99"


def _deflated_ct(path: Path, private_bytes: int = 0) -> Path:
    """CT_small saved with the Deflated Explicit VR Little Endian transfer syntax; with
    ``private_bytes`` zeros in a private element (a deflate bomb: ~1000:1)."""
    ds = pydicom.dcmread(dicom_corpus_path("CT_small.dcm"))
    ds.file_meta.TransferSyntaxUID = DEFLATED
    if private_bytes:
        block = ds.private_block(0x0009, "MEDSR BOUNDS TEST", create=True)
        block.add_new(0x10, "OB", bytes(private_bytes))
    ds.save_as(path, enforce_file_format=True)
    return path


def test_a_deflated_dicom_reads_as_its_source(tmp_path):
    """Every deflated file was refused as 'truncated': positions in the inflated data set were
    compared with the size of the compressed file."""
    path = _deflated_ct(tmp_path / "deflated.dcm")
    source = medsr.load_image(dicom_corpus_path("CT_small.dcm"))
    image = medsr.load_image(path)
    np.testing.assert_array_equal(image.array, source.array)
    assert image.spacing == source.spacing


def test_a_deflate_bomb_is_refused_before_it_is_inflated(tmp_path, monkeypatch):
    """A 32 KB file inflating to 32 MB: pydicom inflates the whole data set in memory before
    any element is read, so the size is measured first, piece by piece."""
    path = _deflated_ct(tmp_path / "bomb.dcm", private_bytes=32 * 2**20)
    assert path.stat().st_size < 100_000
    monkeypatch.setenv("MEDSR_MAX_PIXELS", str(10**6))  # what it may inflate to: 20.8 MB
    tracemalloc.start()
    try:
        with pytest.raises(InputTooLargeError, match=r"deflated DICOM .* MEDSR_MAX_PIXELS"):
            medsr.load_image(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20


def test_a_cut_deflate_stream_is_a_truncated_file(tmp_path):
    data = _deflated_ct(tmp_path / "full.dcm").read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[: len(data) - 2000])
    with pytest.raises(CorruptInputError, match="is cut short"):
        medsr.load_image(tmp_path / "cut.dcm")
