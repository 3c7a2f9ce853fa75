"""gzip on every core: blocks deflated in parallel into one ordinary gzip member.

The layout of ``pigz`` (M. Adler): the data is cut into blocks; each is compressed on its own
as raw deflate ending on a byte boundary (``Z_SYNC_FLUSH``), the blocks are written in order,
then an empty final block, the CRC-32 and the length (RFC 1952). Any gzip reader (nibabel,
``gzip``, ``zcat``) inflates it like a file compressed in one stream; only the compressed bytes
differ (each block starts without the previous one's dictionary: under 0.1 % larger for 4 MiB
blocks). zlib releases the GIL while it compresses, so threads use the cores.

Deflate: ISA-L (``isal.isal_zlib``, a dependency) when importable, else zlib. On a ×2 fast-x2
CT output (4 MiB of float32) ISA-L level 1 takes 32 ms against zlib level 1's 211 ms, keeping
83.5 % of the bytes against 82.8 % (AMD EPYC, one thread). The CRC-32 comes from the same
library (ISA-L's: 6 ms against zlib's 14 ms per 32 MiB), computed per block by the thread that
deflates it and combined in order (``crc32_combine``). The large ``bytes`` slabs nibabel writes
are deflated where they lie, without a copy. On a 1024²×9 float32 volume (37.7 MB, two
threads) the writer takes 72–75 ms (median of 9) where the serial CRC and the copies through one
buffer took 88–90 ms.

Level: :data:`GZIP_LEVEL` = 1, what nibabel writes by default. A super-resolved float32 volume
is nearly incompressible — noise in the low mantissa bits — and higher levels buy little: on a
512×512×9 CT upscaled ×2 (``benchmarks/results/speed_e2e.md``) level 1 keeps 77.7 % of the
bytes, level 2 77.3 %, levels 4 and 6 78 %, at 1.2 to 2.4 times the time.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import BinaryIO

__all__ = ["GZIP_BLOCK", "GZIP_LEVEL", "ParallelGzipWriter"]

#: deflate level of medsr's .nii.gz outputs (see the module docstring)
GZIP_LEVEL = 1
#: bytes per independently compressed block
GZIP_BLOCK = 4 * 2**20


try:
    from isal import isal_zlib as _deflater
except ImportError:  # pragma: no cover - isal is a dependency; zlib is the fallback
    _deflater = zlib  # type: ignore[assignment,misc]
_crc32 = _deflater.crc32
#: ISA-L combines the CRCs of consecutive blocks (zlib's Python module cannot): each block's CRC
#: is then computed by the thread that deflates it, not serially by the writing thread
_crc32_combine = getattr(_deflater, "crc32_combine", None)


def _deflate(block: bytes | memoryview, level: int) -> tuple[bytes, int]:
    """``(raw deflate of block ending on a byte boundary, its CRC-32)``; the CRC is 0 where the
    CRCs cannot be combined (zlib), as the writer then computes it in order itself."""
    if _deflater is not zlib:
        level = min(level, 3)  # ISA-L's levels are 0-3
    c = _deflater.compressobj(level, _deflater.DEFLATED, -15)
    crc = _crc32(block) if _crc32_combine is not None else 0
    return c.compress(block) + c.flush(_deflater.Z_SYNC_FLUSH), crc


class ParallelGzipWriter(io.RawIOBase):
    """A write-only binary file that gzips what is written to ``raw`` on ``threads`` threads.

    It can only move forward: ``seek`` to the current position is accepted (nibabel's writer
    does it), other seeks raise and the caller writes zeros instead. ``close`` finishes the
    gzip member; ``raw`` stays open (its owner closes it).
    """

    def __init__(
        self,
        raw: BinaryIO,
        *,
        level: int = GZIP_LEVEL,
        threads: int | None = None,
        block: int = GZIP_BLOCK,
    ):
        super().__init__()
        self._raw = raw
        self._level = int(level)
        self._threads = max(1, threads or min(4, os.cpu_count() or 1))
        self._block = int(block)
        self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="medsr-gzip")
        self._pending: deque[tuple[Future[tuple[bytes, int]], int]] = deque()
        self._buffer = bytearray()
        self._crc = 0
        self._size = 0
        # magic, deflate, no flags, mtime 0 (reproducible bytes), no extra flags, OS unknown
        raw.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff")

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        return self._size

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET and offset == self._size:
            return self._size
        raise io.UnsupportedOperation("a gzip stream being written only moves forward")

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(data).cast("B")
        n = len(view)
        self._size += n
        if (isinstance(data, bytes) or (isinstance(data, memoryview) and data.readonly)) and (
            n >= self._block // 2
        ):
            # large immutable bytes (what nibabel writes: a slab of the volume) and read-only views
            # (medsr's NIfTI writer: the volume itself; read-only is the caller's promise that the
            # memory does not change until close) go without a copy: what is buffered goes first
            # as a block of its own, then slices of the data itself
            if self._buffer:
                self._submit(bytes(self._buffer))
                self._buffer.clear()
            for start in range(0, n, self._block):
                self._submit(view[start : start + self._block])
            return n
        self._buffer += view
        while len(self._buffer) >= self._block:
            self._submit(bytes(self._buffer[: self._block]))
            del self._buffer[: self._block]
        return n

    def _submit(self, block: bytes | memoryview) -> None:
        if _crc32_combine is None:  # zlib: one CRC, in order, here
            self._crc = _crc32(block, self._crc)
        size = len(block)
        job = self._pool.submit(_deflate, block, self._level)
        self._pending.append((job, size))
        while len(self._pending) > 2 * self._threads:  # bounded memory: write what is done
            self._write_done()

    def _write_done(self) -> None:
        job, size = self._pending.popleft()
        deflated, crc = job.result()
        if _crc32_combine is not None:
            self._crc = _crc32_combine(self._crc, crc, size)
        self._raw.write(deflated)

    def close(self) -> None:
        if self.closed:
            return
        try:
            if self._buffer:
                self._submit(bytes(self._buffer))
                self._buffer.clear()
            while self._pending:
                self._write_done()
            self._raw.write(b"\x03\x00")  # the final (empty, fixed-Huffman) block
            self._raw.write(struct.pack("<II", self._crc & 0xFFFFFFFF, self._size & 0xFFFFFFFF))
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
            super().close()
