"""One streaming pass from the downloaded image to a staged copy: sha512 of the bytes as
published, decompression (gzip, xz, zstd), a safety look at the disk header
(:mod:`nodecache.disk_header`), and the write. Blocking: run it in a thread.

Two threads overlap the work: this one reads, hashes and decompresses; a writer thread
writes whole aligned blocks, with O_DIRECT where the file system has it (hashlib, the
decompressors and the writes release the GIL, so the two really run in parallel).
Blocks of zeros are skipped (``sparse``), as qemu-img does. Nothing is kept
unless the whole stream matched: on a mismatch or any error the target is removed
and the error says why.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import gzip
import hashlib
import lzma
import mmap
import os
import queue
import threading
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import zstandard

from ..disk_header import HEAD_BYTES, check
from ..errors import ImageRefused, StageFailed

BLOCK = 4 * 2**20
HOLE = 64 * 2**10  #: zero runs of this size (aligned in the file) are skipped, not written
_ZERO_PREFIX = bytes(16)
_ZEROS = bytes(HOLE)


class HashingReader:
    """A file wrapper that hashes every byte read through it."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle
        self.digest = hashlib.sha512()
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self.handle.read(size)
        self.digest.update(data)
        self.count += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True

    def drain(self) -> None:
        while self.read(BLOCK):
            pass


def _decompressed(raw: HashingReader, compression: str) -> IO[bytes]:
    stream = cast(IO[bytes], raw)  # it reads like a binary file: read(size), readinto, readable
    if compression == "gzip":
        return cast(IO[bytes], gzip.GzipFile(fileobj=stream))
    if compression == "xz":
        return lzma.LZMAFile(stream)
    if compression == "zstd":
        return cast(IO[bytes], zstandard.ZstdDecompressor().stream_reader(stream, read_across_frames=True, closefd=False))
    if compression == "none":
        return stream
    raise ImageRefused(f"unknown compression {compression!r}")


@dataclass(frozen=True)
class Copied:
    written: int  #: bytes of the decompressed image


def check_head(source: Path, declared_format: str) -> None:
    """The disk-header check of :mod:`nodecache.disk_header` on a file (reads 64 KiB)."""
    with open(source, "rb") as handle:
        check(declared_format, handle.read(HEAD_BYTES))


async def gather_all(*steps: Awaitable[object]) -> None:
    """Run steps together; if one fails, cancel the others, wait for them, and raise."""
    tasks = [asyncio.ensure_future(step) for step in steps]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def verify_only(source: Path, sha512: str, declared_format: str, progress: Callable[[int], None]) -> None:
    """Hash ``source`` and check its header, without writing (for a zero-copy stage)."""
    with open(source, "rb") as handle:
        reader = HashingReader(handle)
        check(declared_format, reader.read(HEAD_BYTES))
        while block := reader.read(BLOCK):
            progress(reader.count)
            del block
    if reader.digest.hexdigest() != sha512:
        raise ImageRefused(f"sha512 of the downloaded image is {reader.digest.hexdigest()[:16]}..., "
                           f"the signed list says {sha512[:16]}...")


class _Writer:
    """Writes the stream in whole, aligned blocks: assembled in a page-aligned buffer, then
    written with O_DIRECT where the file system allows it (no second copy through the page
    cache, which on a small machine competes with hashing for the CPU), skipping aligned
    all-zero HOLE-sized pieces (``sparse``)."""

    def __init__(self, fd: int, direct: bool, sparse: bool) -> None:
        self.fd, self.direct, self.sparse = fd, direct, sparse
        self.buffer = mmap.mmap(-1, BLOCK)
        self.fill = 0
        self.offset = 0  #: file offset of the buffer's first byte

    def add(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = min(BLOCK - self.fill, len(view))
            self.buffer[self.fill:self.fill + n] = view[:n]
            self.fill += n
            view = view[n:]
            if self.fill == BLOCK:
                self.flush()

    def _write(self, start: int, end: int) -> None:
        view = memoryview(self.buffer)[start:end]
        offset = self.offset + start
        try:
            while view:
                done = os.pwrite(self.fd, view, offset)
                view, offset = view[done:], offset + done
        finally:
            view.release()

    def flush(self) -> None:
        if self.fill % 4096 and self.direct:  # the unaligned tail: through the page cache
            fcntl.fcntl(self.fd, fcntl.F_SETFL, fcntl.fcntl(self.fd, fcntl.F_GETFL) & ~os.O_DIRECT)
            self.direct = False
        start = position = 0
        while self.sparse and position + HOLE <= self.fill:
            end = position + HOLE
            # a 16-byte look first (most data fails it at once), then the whole piece
            if self.buffer[position:position + 16] == _ZERO_PREFIX and self.buffer[position:end] == _ZEROS:
                self._write(start, position)
                start = end
            position = end
        self._write(start, self.fill)
        self.offset += self.fill
        self.fill = 0

    def close(self) -> None:
        self.buffer.close()


def _open_target(target: Path) -> tuple[int, bool]:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    try:
        return os.open(target, flags | getattr(os, "O_DIRECT", 0), 0o600), hasattr(os, "O_DIRECT")
    except OSError as exc:
        if exc.errno != errno.EINVAL:  # EINVAL: this file system has no O_DIRECT (tmpfs)
            raise
        target.unlink(missing_ok=True)
        return os.open(target, flags, 0o600), False


def copy_verified(source: Path, target: Path, sha512: str, compression: str, declared_format: str,
                  progress: Callable[[int], None], sparse: bool = True) -> Copied:
    """Decompress ``source`` into the new file ``target``, checking sha512 and header."""
    blocks: queue.Queue[bytes | None] = queue.Queue(maxsize=4)
    failure: list[BaseException] = []
    fd, direct = _open_target(target)

    def writer() -> None:
        out = _Writer(fd, direct, sparse)
        try:
            while (block := blocks.get()) is not None:
                out.add(block)
            out.flush()
            os.ftruncate(fd, out.offset)
            os.fsync(fd)
        except BaseException as exc:  # noqa: B036 - reported to the reading thread
            failure.append(exc)
            while blocks.get() is not None:  # let the reader finish without blocking
                pass
        finally:
            out.close()

    thread = threading.Thread(target=writer, name="nodecache-stage-write")
    thread.start()
    written = 0
    try:
        try:
            with open(source, "rb") as handle:
                raw = HashingReader(handle)
                stream = _decompressed(raw, compression)
                first = True
                while not failure:
                    block = stream.read(BLOCK)
                    if first:
                        head = block if len(block) >= HEAD_BYTES else block + stream.read(HEAD_BYTES)
                        check(declared_format, head[:HEAD_BYTES])
                        block, first = head, False
                    if not block:
                        break
                    written += len(block)
                    blocks.put(block)
                    progress(raw.count)
                raw.drain()  # bytes after the compressed stream count too
        except (gzip.BadGzipFile, EOFError, lzma.LZMAError, zstandard.ZstdError, zlib.error) as exc:
            raise ImageRefused(f"cannot decompress the image ({compression}): {exc}") from None
        finally:
            blocks.put(None)
            thread.join()
        if failure:
            raise failure[0]
        if raw.digest.hexdigest() != sha512:
            raise ImageRefused(f"sha512 of the downloaded image is {raw.digest.hexdigest()[:16]}..., "
                               f"the signed list says {sha512[:16]}...")
        return Copied(written)
    except OSError as exc:
        target.unlink(missing_ok=True)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StageFailed(f"disk full while staging into {target.parent}: {os.strerror(exc.errno)}") from None
        raise StageFailed(f"cannot stage into {target}: {exc.strerror or exc}") from None
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)
