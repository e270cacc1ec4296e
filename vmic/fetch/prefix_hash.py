"""The sha512 of a download while it arrives: the contiguous prefix of pieces the swarm
has verified (against the signed torrent) is read back in order, from the page cache, as
it grows; when the last piece is in, only the tail is left to hash. Without it, the
whole-image sha512 pass would start after the last piece (tens of seconds for 10 GB on
one core) and no swarm tuning could remove it.

What it gives is a claim about the file's bytes as read: staging still compares it with
the signed sha512 and, should they differ, hashes the file again before refusing
(nodecache/storage/files.py), so nothing unverified is ever published.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

from vmic.sparse import hash_range


class PrefixHasher:
    def __init__(self, path: Path, piece_length: int, size: int) -> None:
        self.path = path
        self.piece_length = piece_length
        self.size = size
        self.offset = 0  #: bytes hashed so far (the verified prefix, read back)
        self._pieces = 0  #: pieces of the prefix
        self._digest = hashlib.sha512()
        self._running: asyncio.Task[None] | None = None

    def _read_to(self, end: int) -> None:
        """Hash from ``offset`` to ``end``; holes (pieces of zeros left unwritten) from memory.
        ``offset`` follows every step, so a read that fails is taken up where it stopped."""
        start = self.offset

        def moved(done: int) -> None:
            self.offset = start + done

        fd = os.open(self.path, os.O_RDONLY)
        try:
            hash_range(fd, start, end, self._digest, moved)  # OSError if the file ends before end
        finally:
            os.close(fd)

    def _settled(self) -> bool:
        """No read running (one that failed is retrieved: the next starts where it stopped)."""
        if self._running is None:
            return True
        if not self._running.done():
            return False
        if not self._running.cancelled():
            self._running.exception()
        return True

    def advance(self, have: Sequence[bool]) -> None:
        """Hash, in a thread, what the verified prefix grew by since the last call (if the
        previous round is still running, this one waits for the next call)."""
        if not self._settled():
            return
        pieces = self._pieces
        while pieces < len(have) and have[pieces]:
            pieces += 1
        if pieces == self._pieces:
            return
        self._pieces = pieces
        end = min(self.size, pieces * self.piece_length)
        self._running = asyncio.create_task(asyncio.to_thread(self._read_to, end))

    async def finish(self) -> str:
        """The sha512 of the whole file, once every piece is in (the tail hashed now).
        OSError if the file cannot be read to its end (the caller then hashes it whole)."""
        if self._running is not None:
            with contextlib.suppress(Exception):  # a failed read: what it did not read is read now
                await self._running
        await asyncio.to_thread(self._read_to, self.size)
        return self._digest.hexdigest()

    def cancel(self) -> None:
        if self._running is not None:
            self._running.cancel()
