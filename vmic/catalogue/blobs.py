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
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar, cast

from ..errors import StorageError, VmicError
from ..sparse import Run, Zeros, hash_zeros, runs

T = TypeVar("T")

#: small received pieces are gathered to this size before hashing and writing
CHUNK = 4 * 2**20
#: a received piece at least this large is hashed and written as it is
DIRECT = 2**20


@dataclass
class HashState:
    """A running sha512 over the first ``count`` bytes of a part file."""

    hasher: "hashlib._Hash" = field(default_factory=hashlib.sha512)
    count: int = 0


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

    def used_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.blob_dir.glob("*/*") if p.is_file())

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

        Receiving, hashing and writing overlap: while one chunk is hashed and written (in
        two threads; hashlib releases the GIL), the event loop receives the next. At most
        ``limit`` bytes are taken; one more byte raises ``OverflowError`` after undoing the
        whole call (the part file and ``state`` back where they were), as does a malformed
        body (a :class:`~vmic.errors.VmicError` from ``chunks``); a body that just ends
        (a cut connection) keeps what arrived. ``state``
        advances only over bytes both hashed and written; a write that fails (disk full)
        truncates the file back to ``state.count``, so the part file and ``state`` agree.
        Writes, truncation and closing run in order on one thread of their own, so a
        cancelled request never closes the file under a running write.
        """
        loop = asyncio.get_running_loop()
        writer = ThreadPoolExecutor(1, thread_name_prefix="vmic-write")
        hasher_pool = ThreadPoolExecutor(1, thread_name_prefix="vmic-hash")
        fd = os.open(self.part(upload_id), os.O_WRONLY | os.O_APPEND)
        start, initial = state.count, state.hasher.copy()
        pending: asyncio.Future[None] | None = None

        def write_all(data: bytes | bytearray) -> None:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]

        async def hash_and_write(data: bytes | bytearray | Zeros) -> None:
            hasher = state.hasher.copy()
            if isinstance(data, Zeros):
                size = state.count + data.length
                await asyncio.gather(
                    loop.run_in_executor(hasher_pool, hash_zeros, hasher, data.length),
                    loop.run_in_executor(writer, os.ftruncate, fd, size),
                )
                state.hasher, state.count = hasher, size
                return
            await asyncio.gather(
                loop.run_in_executor(hasher_pool, hasher.update, data),
                loop.run_in_executor(writer, write_all, data),
            )
            state.hasher, state.count = hasher, state.count + len(data)

        async def submit(data: bytes | bytearray | Zeros) -> None:
            nonlocal pending
            if pending is not None:
                await pending
            pending = asyncio.ensure_future(hash_and_write(data))

        try:
            buffer = bytearray()
            async for chunk in chunks:
                size = chunk.length if isinstance(chunk, Zeros) else len(chunk)
                room = limit - (state.count - start) - len(buffer)
                if size > room:  # refused whole: nothing of this request is kept
                    if pending is not None:
                        await pending
                    await loop.run_in_executor(writer, os.ftruncate, fd, start)
                    state.hasher, state.count = initial, start
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
            if pending is not None:
                await pending
        except BaseException as exc:
            failure: BaseException = exc
            if pending is not None:  # let it settle: the part file and state agree before anyone reads them
                await asyncio.wait([pending])
                if not pending.cancelled() and isinstance(pending.exception(), OSError):
                    failure = cast(OSError, pending.exception())
            if isinstance(failure, VmicError):  # a malformed body is refused whole, like one too long
                state.hasher, state.count = initial, start
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

    def allocated_bytes(self) -> int:
        """Disk the blobs take (holes take none)."""
        return sum(p.stat().st_blocks * 512 for p in self.blob_dir.glob("*/*") if p.is_file())

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
        for run in runs(fd, 0, os.fstat(fd).st_size):
            if isinstance(run, Zeros):
                hash_zeros(state.hasher, run.length)
                state.count += run.length
            else:
                state.hasher.update(run)
                state.count += len(run)
    finally:
        os.close(fd)
    return state
