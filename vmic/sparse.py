"""Files that are mostly holes: where their data is, and their bytes as runs of data and
zeros, read without reading the holes.

Golden images are 10-20 GiB of virtual disk holding 2-4 GiB of data; the rest are holes
(``SEEK_HOLE``) or blocks of zeros written out. :func:`runs` yields a file's bytes as
data blocks and :class:`Zeros` (holes, and aligned :data:`ZERO_BLOCK`-sized blocks of
zeros found in the data), so a sender can skip the zeros and a hasher can hash them
from memory (:func:`hash_zeros`): the sha512 still covers every byte.
"""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

#: an aligned block of zeros this large inside the data counts as a hole
ZERO_BLOCK = 64 * 2**10
#: data is read in blocks of this size: hashing threads take the GIL back once per
#: block, and an event loop busy in the same process makes them wait for it each time
#: (measured: sha512 over 4 MiB blocks ran at 0.38x its speed beside a thread copying
#: memory, over 64 MiB blocks at 0.89x)
READ_BLOCK = 16 * 2**20
_ZEROS = bytes(ZERO_BLOCK)
#: zeros to hash from: never written, so every page is the kernel's one zero page (no
#: memory, always in cache)
_ZERO_RUN = mmap.mmap(-1, 256 * 2**20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, prot=mmap.PROT_READ)
_ZERO_PREFIX = bytes(16)


@dataclass(frozen=True)
class Zeros:
    """A run of ``length`` zero bytes (a hole, or zeros written out)."""

    length: int


Run = bytes | Zeros


def data_extents(fd: int, start: int, end: int) -> Iterator[tuple[int, int]]:
    """The ``(first, after_last)`` byte ranges of ``[start, end)`` that may hold data, in
    order (what the file system reports; a file system without ``SEEK_DATA`` reports
    all of it)."""
    position = start
    while position < end:
        try:
            first = os.lseek(fd, position, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole from here to the end of the file
                return
            if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):
                yield position, end
                return
            raise
        if first >= end:
            return
        after = min(os.lseek(fd, first, os.SEEK_HOLE), end)
        yield first, after
        position = after


def is_zero(data: bytes | bytearray | memoryview) -> bool:
    """True if every byte of ``data`` is zero (a 16-byte look first: most data fails it)."""
    view = memoryview(data)
    if view[:16] != _ZERO_PREFIX[: len(view[:16])]:
        return False
    return all(view[i:i + ZERO_BLOCK] == _ZEROS[: len(view[i:i + ZERO_BLOCK])] for i in range(0, len(view), ZERO_BLOCK))


def _split_zero_blocks(block: bytes, offset: int) -> Iterator[Run]:
    """``block`` (starting at file ``offset``) with its aligned zero blocks as Zeros."""
    view = memoryview(block)
    start = 0
    # the first boundary of ZERO_BLOCK at or after offset, relative to the block
    position = (-offset) % ZERO_BLOCK
    while position + ZERO_BLOCK <= len(view):
        end = position + ZERO_BLOCK
        if is_zero(view[position:end]):
            if position > start:
                yield bytes(view[start:position])
            run = end
            while run + ZERO_BLOCK <= len(view) and is_zero(view[run:run + ZERO_BLOCK]):
                run += ZERO_BLOCK
            yield Zeros(run - position)
            start = position = run
        else:
            position = end
    if start == 0:
        yield block
    elif start < len(view):
        yield bytes(view[start:])


def _require(fd: int, end: int) -> None:
    """OSError unless the file reaches ``end`` (past its end, SEEK_DATA would report a hole)."""
    size = os.fstat(fd).st_size
    if size < end:
        raise OSError(errno.EIO, f"the file ends at {size}, before {end} (changed while read?)")


def runs(fd: int, start: int, end: int) -> Iterator[Run]:
    """The bytes of ``[start, end)`` as data blocks (at most :data:`READ_BLOCK`) and
    Zeros, adjacent Zeros merged; holes are never read. OSError if the file does not
    reach ``end``, before or after (a file cut short is never taken for zeros)."""
    _require(fd, end)
    pending = 0  # zeros not yet yielded

    def pieces() -> Iterator[Run]:
        position = start
        for first, after in data_extents(fd, start, end):
            if first > position:
                yield Zeros(first - position)
            while first < after:
                block = os.pread(fd, min(READ_BLOCK, after - first), first)
                if not block:
                    raise OSError(errno.EIO, "the file ended before its size (changed while read?)")
                yield from _split_zero_blocks(block, first)
                first += len(block)
            position = after
        if end > position:
            yield Zeros(end - position)

    for piece in pieces():
        if isinstance(piece, Zeros):
            pending += piece.length
            continue
        if pending:
            yield Zeros(pending)
            pending = 0
        yield piece
    _require(fd, end)
    if pending:
        yield Zeros(pending)


def hash_zeros(hasher: hashlib._Hash, length: int) -> None:
    """Feed ``length`` zero bytes to ``hasher`` from memory, in long runs."""
    zeros = memoryview(_ZERO_RUN)
    while length > 0:
        n = min(length, len(zeros))
        hasher.update(zeros[:n])
        length -= n


def hash_range(fd: int, start: int, end: int, hasher: hashlib._Hash,
               progress: Callable[[int], None] | None = None) -> None:
    """Feed ``[start, end)`` of the open file ``fd`` to ``hasher``, holes from memory;
    ``progress`` is told the bytes hashed so far after every step (a step of zeros is at
    most 1 GiB, so progress moves through a long hole too)."""
    done = 0
    for run in runs(fd, start, end):
        if isinstance(run, Zeros):
            left = run.length
            while left:
                step = min(left, 64 * READ_BLOCK)
                hash_zeros(hasher, step)
                done, left = done + step, left - step
                if progress:
                    progress(done)
            continue
        hasher.update(run)
        done += len(run)
        if progress:
            progress(done)


def sha512_file(path: Path, progress: Callable[[int], None] | None = None) -> str:
    """The sha512 of every byte of ``path``, its holes hashed without being read."""
    hasher = hashlib.sha512()
    fd = os.open(path, os.O_RDONLY)
    try:
        hash_range(fd, 0, os.fstat(fd).st_size, hasher, progress)
    finally:
        os.close(fd)
    return hasher.hexdigest()


def allocated_bytes(path: Path) -> int:
    """Bytes the file takes on disk (what ``du`` shows)."""
    return os.stat(path).st_blocks * 512
