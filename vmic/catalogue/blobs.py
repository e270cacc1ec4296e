"""The content-addressed blob store, and the streaming, hashing writer that fills it.

Layout under the data directory (one filesystem, so moves are atomic renames)::

    blobs/sha512/<2 hex>/<128 hex>    complete, verified, immutable image bytes (0444)
    uploads/<upload id>.part          bytes of an upload in progress

A blob appears under its hash only once all its bytes are on disk and synced; a part
file is never read by anyone but the upload that writes it. Zeros an upload declares
(:mod:`vmic.extent_stream`) become holes: a blob takes the disk its data needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from .. import writeback
from ..errors import StorageError, VmicError
from ..sparse import Run, Zeros, hash_range, hash_zeros

T = TypeVar("T")

#: small received pieces are gathered to this size before hashing and writing
CHUNK = 4 * 2**20
#: a received piece at least this large is hashed and written as it is
DIRECT = 2**20
#: bytes of data handed to the hashing and writing threads and not yet done by both
#: (runs of zeros take no memory and do not count: the hash runs on through them while
#: the writes catch up)
IN_FLIGHT = 64 * 2**20


@dataclass
class HashState:
    """A running sha512 over the first ``count`` bytes of a part file."""

    hasher: "hashlib._Hash" = field(default_factory=hashlib.sha512)
    count: int = 0
    #: the hasher may have taken more than ``count`` bytes (a write failed): hash the file again
    stale: bool = False


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.blob_dir = self.root / "blobs" / "sha512"
        self.part_dir = self.root / "uploads"
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self.part_dir.mkdir(parents=True, exist_ok=True)
        #: blobs stored but not yet recorded by an image (garbage collection leaves them alone)
        self.pinned: set[str] = set()

    # --- blobs ------------------------------------------------------------------------

    @contextlib.contextmanager
    def pin(self, sha512: str) -> Iterator[None]:
        """Keep the blob ``sha512`` from garbage collection while its image is being recorded."""
        self.pinned.add(sha512)
        try:
            yield
        finally:
            self.pinned.discard(sha512)

    def path(self, sha512: str) -> Path:
        return self.blob_dir / sha512[:2] / sha512

    def has(self, sha512: str) -> bool:
        return self.path(sha512).is_file()

    def sha512s(self) -> set[str]:
        return {p.name for p in self.blob_dir.glob("*/*") if p.is_file()}

    def remove(self, sha512: str) -> None:
        self.path(sha512).unlink(missing_ok=True)

    def usage(self) -> tuple[int, int]:
        """Bytes of the blobs, and the disk they take (holes take none), in one pass."""
        stats = [p.stat() for p in self.blob_dir.glob("*/*") if p.is_file()]
        return sum(s.st_size for s in stats), sum(s.st_blocks * 512 for s in stats)

    # --- part files -------------------------------------------------------------------

    def part(self, upload_id: str) -> Path:
        return self.part_dir / f"{upload_id}.part"

    def create_part(self, upload_id: str) -> None:
        self.part(upload_id).touch(mode=0o600, exist_ok=False)

    def part_size(self, upload_id: str) -> int | None:
        try:
            return self.part(upload_id).stat().st_size
        except FileNotFoundError:
            return None

    def delete_part(self, upload_id: str) -> None:
        self.part(upload_id).unlink(missing_ok=True)

    def part_ids(self) -> set[str]:
        return {p.name.removesuffix(".part") for p in self.part_dir.glob("*.part")}

    async def rehash(self, upload_id: str) -> HashState:
        """Hash a part file from its start (after a restart, or a write that failed)."""

        def run() -> HashState:
            return _hash_state(self.part(upload_id))

        return await asyncio.get_running_loop().run_in_executor(None, run)

    async def append(self, upload_id: str, state: HashState, chunks: AsyncIterator[Run], limit: int) -> int:
        """Append ``chunks`` to the part file, hashing on the way; return bytes taken.

        A :class:`~vmic.sparse.Zeros` run extends the file by a hole (``ftruncate``) and
        is hashed from memory.

        Receiving, hashing and writing overlap: each chunk goes to a hashing thread and a
        writing thread at once, each working through its queue in order without waiting
        for the other (so the hash, the bound of an upload, never waits for a write), with
        at most :data:`IN_FLIGHT` bytes of data between the event loop and the slower of the two.
        At most ``limit`` bytes are taken; one more byte raises ``OverflowError`` after
        undoing the whole call (the part file and ``state`` back where they were), as does
        a malformed body (a :class:`~vmic.errors.VmicError` from ``chunks``); a body that
        just ends (a cut connection) keeps what arrived. A write that fails (disk full)
        stops every later write, the part file is cut back to what was written in order,
        and ``state`` is marked stale (the hash ran ahead): the next PATCH hashes the part
        file again. Writes, truncation and closing run in order on the writing thread, so
        a cancelled request never closes the file under a running write.
        """
        loop = asyncio.get_running_loop()
        writer = ThreadPoolExecutor(1, thread_name_prefix="vmic-write")
        hasher_pool = ThreadPoolExecutor(1, thread_name_prefix="vmic-hash")
        fd = os.open(self.part(upload_id), os.O_WRONLY | os.O_APPEND)
        start, initial = state.count, state.hasher  #: the hasher as it was: only ``hasher`` takes bytes
        hasher = state.hasher.copy()  #: runs ahead of the writes
        #: (hashed, written, bytes of the image, bytes of memory held)
        in_flight: deque[tuple[asyncio.Future[None], asyncio.Future[None], int, int]] = deque()
        held = 0  #: bytes of data in flight
        failed = threading.Event()  #: a write failed: no later write may land (O_APPEND would misplace it)
        taken = 0  #: bytes handed to the threads
        unsynced = start  #: where the part file's bytes not yet sent to the disk begin (writing thread)

        def write(data: bytes | bytearray | Zeros, end: int) -> None:
            nonlocal unsynced
            if failed.is_set():
                raise OSError(errno.ECANCELED, "an earlier write failed")
            try:
                if isinstance(data, Zeros):
                    os.ftruncate(fd, end)
                    return
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                if end - unsynced >= writeback.EVERY:  # the disk works while the upload goes on
                    writeback.start_writeback(fd, unsynced, end - unsynced)
                    unsynced = end
            except BaseException:
                failed.set()
                raise

        def update(data: bytes | bytearray | Zeros) -> None:
            if isinstance(data, Zeros):
                hash_zeros(hasher, data.length)
            else:
                hasher.update(data)

        async def settle(keep: int) -> None:
            """Until at most ``keep`` bytes of data are in flight; ``state.count`` follows the writes."""
            nonlocal held
            while in_flight and (held > keep or keep == 0):
                hashed, written, length, memory = in_flight[0]
                await asyncio.wait([hashed, written])
                in_flight.popleft()
                written.result()  # the write's error, if any, first
                hashed.result()
                state.count += length
                held -= memory

        async def submit(data: bytes | bytearray | Zeros) -> None:
            nonlocal taken, held
            size = data.length if isinstance(data, Zeros) else len(data)
            memory = 0 if isinstance(data, Zeros) else size
            await settle(IN_FLIGHT - memory)
            held += memory
            taken += size
            in_flight.append((loop.run_in_executor(hasher_pool, update, data),
                              loop.run_in_executor(writer, write, data, start + taken), size, memory))

        try:
            buffer = bytearray()
            async for chunk in chunks:
                size = chunk.length if isinstance(chunk, Zeros) else len(chunk)
                if size > limit - taken - len(buffer):
                    raise OverflowError("more bytes than the upload's length")
                if isinstance(chunk, Zeros):
                    if buffer:
                        await submit(buffer)
                        buffer = bytearray()
                    await submit(chunk)
                    continue
                if not buffer and len(chunk) >= DIRECT:
                    await submit(chunk)  # large already: hashed and written as it came, no copy
                    continue
                buffer += chunk
                if len(buffer) >= CHUNK:
                    await submit(buffer)  # handed over, not copied: a new buffer takes its place
                    buffer = bytearray()
            if buffer:
                await submit(buffer)
            await settle(0)
            state.hasher = hasher
        except BaseException as exc:
            if in_flight:  # let every chunk in flight finish: the part file and state agree before anyone reads them
                await asyncio.wait([f for hashed, written, _, _ in in_flight for f in (hashed, written)])
            failure: BaseException = exc
            in_order = True  #: every chunk so far hashed and written
            while in_flight:
                hashed, written, length, _ = in_flight.popleft()
                error, hash_error = written.exception(), hashed.exception()
                if isinstance(error, OSError) and error.errno != errno.ECANCELED and not isinstance(failure, OSError):
                    failure = error
                in_order = in_order and error is None and hash_error is None
                if in_order:
                    state.count += length
            if isinstance(exc, (OverflowError, VmicError)):  # refused whole: nothing of this request is kept
                state.hasher, state.count = initial, start
            elif in_order and not isinstance(exc, OSError):
                state.hasher = hasher  # e.g. cancelled: what arrived is kept, hashed
            else:
                state.stale = True  # the hash ran ahead of what was written: hashed again at the next PATCH
            await loop.run_in_executor(writer, os.ftruncate, fd, state.count)
            if not isinstance(failure, OSError):
                raise
            if failure.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageError(
                    "the catalogue's disk is full; the upload keeps what was stored and can resume later"
                ) from None
            raise StorageError(f"cannot write upload: {failure.strerror}") from None
        finally:
            writer.submit(os.close, fd)  # after any write still queued
            writer.shutdown(wait=False)
            hasher_pool.shutdown(wait=False)
        return state.count - start

    async def adopt(self, source: Path, sha512: str) -> bool:
        """Move the file ``source`` (on this file system) in as blob ``sha512`` if its bytes
        hash to it; False, and ``source`` left alone, if they do not."""

        def run() -> bool:
            if _hash_state(source).hasher.hexdigest() != sha512:
                return False
            self._install(source, sha512)
            return True

        return await self._on_disk(run)

    async def commit(self, upload_id: str, sha512: str) -> Path:
        """Sync the part file and move it under its hash (kept if that blob exists)."""
        return await self._on_disk(lambda: self._install(self.part(upload_id), sha512))

    def _install(self, source: Path, sha512: str) -> Path:
        """Sync ``source`` and move it, read-only, under its hash; durably (the directory
        synced too). A blob already there is kept and ``source`` dropped."""
        target = self.path(sha512)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_file():
            source.unlink()
            return target
        with open(source, "rb") as handle:
            os.fsync(handle.fileno())
        os.chmod(source, 0o444)
        os.replace(source, target)
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return target

    @staticmethod
    async def _on_disk(work: Callable[[], T]) -> T:
        """``work`` in a thread; the disk's refusal as the 507 every disk path answers."""
        try:
            return await asyncio.get_running_loop().run_in_executor(None, work)
        except OSError as exc:
            raise StorageError(f"cannot store blob: {exc.strerror}") from None



def _hash_state(path: Path) -> HashState:
    """The hash of a whole file, its holes hashed from memory."""
    state = HashState()
    fd = os.open(path, os.O_RDONLY)
    try:
        state.count = os.fstat(fd).st_size
        hash_range(fd, 0, state.count, state.hasher)
    finally:
        os.close(fd)
    return state
