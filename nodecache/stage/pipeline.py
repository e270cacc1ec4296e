"""One streaming pass from the downloaded image to a staged copy: sha512 of the bytes as
published, decompression (gzip, xz, zstd), a safety look at the disk header
(:mod:`nodecache.inspect`), and the write. Blocking: run it in a thread.

Two threads overlap the work: this one reads, hashes and decompresses; a writer thread
writes (hashlib and the decompressors release the GIL, so the two really run in
parallel). Blocks of zeros are skipped (``sparse``), as qemu-img does. Nothing is kept
unless the whole stream matched: on a mismatch or any error the target is removed
and the error says why.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import lzma
import os
import queue
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import zstandard

from ..errors import ImageRefused, StageFailed
from ..inspect import HEAD_BYTES, check

BLOCK = 4 * 2**20
HOLE = 64 * 2**10  #: zero runs of this size (aligned in the file) are skipped, not written
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
    if compression == "gzip":
        return gzip.GzipFile(fileobj=raw)  # type: ignore[arg-type]
    if compression == "xz":
        return lzma.LZMAFile(raw)  # type: ignore[arg-type]
    if compression == "zstd":
        return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True, closefd=False)  # type: ignore[return-value]
    if compression == "none":
        return raw  # type: ignore[return-value]
    raise ImageRefused(f"unknown compression {compression!r}")


@dataclass(frozen=True)
class Copied:
    written: int  #: bytes of the decompressed image


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


def copy_verified(source: Path, target: Path, sha512: str, compression: str, declared_format: str,
                  progress: Callable[[int], None], sparse: bool = True) -> Copied:
    """Decompress ``source`` into the new file ``target``, checking sha512 and header."""
    blocks: queue.Queue[bytes | None] = queue.Queue(maxsize=4)
    failure: list[BaseException] = []
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)

    def write(view: memoryview, offset: int) -> None:
        while view:
            done = os.pwrite(fd, view, offset)
            view, offset = view[done:], offset + done

    def writer() -> None:
        offset = 0
        try:
            while (block := blocks.get()) is not None:
                view = memoryview(block)
                if not sparse:
                    write(view, offset)
                    offset += len(view)
                    continue
                start = 0  # write the runs between aligned all-zero HOLE-sized pieces
                position = 0
                while position < len(view):
                    end = min(len(view), position + HOLE - (offset + position) % HOLE)
                    if end - position == HOLE and view[position:end] == _ZEROS:
                        write(view[start:position], offset + start)
                        start = end
                    position = end
                write(view[start:], offset + start)
                offset += len(view)
            os.ftruncate(fd, offset)
            os.fsync(fd)
        except BaseException as exc:  # noqa: B036 - reported to the reading thread
            failure.append(exc)
            while blocks.get() is not None:  # let the reader finish without blocking
                pass

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
