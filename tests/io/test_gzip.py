"""The parallel gzip writer makes ordinary gzip: any reader inflates it to the same bytes."""

from __future__ import annotations

import gzip
import io
import zlib

import numpy as np
import pytest

import medsr
from medsr.image import MedImage
from medsr.io import _gzip
from medsr.io._gzip import ParallelGzipWriter


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("combine", [True, False])
def test_blocks_make_one_ordinary_gzip_member(threads, combine, rng, monkeypatch):
    """Whether the blocks' CRCs are combined (ISA-L) or computed in order (zlib's fallback)."""
    if not combine:
        monkeypatch.setattr(_gzip, "_crc32_combine", None)
    elif _gzip._crc32_combine is None:  # pragma: no cover - isal is a dependency
        pytest.skip("no crc32_combine without ISA-L")
    data = rng.integers(0, 7, 100_003, dtype=np.uint8).tobytes()
    raw = io.BytesIO()
    with ParallelGzipWriter(raw, threads=threads, block=4096) as gz:
        gz.write(data[:10])
        gz.write(memoryview(data)[10:50_000])  # a view: copied, not kept
        gz.write(bytes(data[50_000:]))  # large immutable bytes: deflated in place, 13 blocks
        assert gz.tell() == len(data)
        assert gz.seek(len(data)) == len(data)
        with pytest.raises(io.UnsupportedOperation):
            gz.seek(0)
    blob = raw.getvalue()
    assert gzip.decompress(blob) == data
    assert zlib.decompress(blob, wbits=31) == data  # exactly one member: nothing left over
    assert len(blob) < len(data)


def test_empty_stream():
    raw = io.BytesIO()
    ParallelGzipWriter(raw).close()
    assert gzip.decompress(raw.getvalue()) == b""


@pytest.mark.parametrize("channels", [None, "RGB"])
def test_nifti_gz_holds_the_same_bytes_as_nii(tmp_path, rng, channels):
    shape = (3, 2, 9, 7) if channels else (5, 9, 7)
    img = MedImage(
        rng.normal(0, 300, shape).astype(np.float32), spacing=(2.0, 0.5, 0.6), channels=channels
    )
    gz_path, nii_path = tmp_path / "a.nii.gz", tmp_path / "b.nii"  # a stem has one JSON sidecar
    medsr.save_image(img, gz_path)
    medsr.save_image(img, nii_path)
    assert gzip.decompress(gz_path.read_bytes()) == nii_path.read_bytes()
    back = medsr.load_image(gz_path)
    assert np.array_equal(back.array, img.array)
    assert back.spacing == pytest.approx(img.spacing)
