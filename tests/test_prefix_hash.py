"""The sha512 hashed while a download arrives (vmic/fetch/prefix_hash.py): only the
contiguous prefix of verified pieces is read, in order; the result is the file's sha512."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from vmic.fetch.prefix_hash import PrefixHasher

PIECE = 64 * 1024


async def test_the_prefix_grows_only_with_contiguous_pieces_and_ends_in_the_files_sha512(tmp_path: Path) -> None:
    data = os.urandom(10 * PIECE - 100)  # a short last piece
    path = tmp_path / "image"
    path.write_bytes(bytes(len(data)))  # preallocated, as a download is: zeros until pieces land
    hasher = PrefixHasher(path, PIECE, len(data))

    def land(*pieces: int) -> None:
        with open(path, "r+b") as out:
            for piece in pieces:
                out.seek(piece * PIECE)
                out.write(data[piece * PIECE:(piece + 1) * PIECE])

    have = [False] * 10
    land(1, 2)
    have[1] = have[2] = True
    hasher.advance(have)
    assert hasher.offset == 0 and hasher._running is None, "piece 0 missing: nothing is read"
    land(0)
    have[0] = True
    hasher.advance(have)
    assert hasher._running is not None
    await hasher._running
    assert hasher.offset == 3 * PIECE
    land(3, 4, 5, 6, 7, 8, 9)
    hasher.advance([True] * 10)
    assert await hasher.finish() == hashlib.sha512(data).hexdigest()
    assert hasher.offset == len(data)


async def test_bytes_changed_after_they_were_hashed_give_another_digest(tmp_path: Path) -> None:
    """What the hasher reports is what it read: staging compares it with the signed sha512
    and hashes the file again when they differ (the file, not the claim, decides)."""
    data = os.urandom(4 * PIECE)
    path = tmp_path / "image"
    path.write_bytes(data)
    hasher = PrefixHasher(path, PIECE, len(data))
    hasher.advance([True, True, False, False])
    with open(path, "r+b") as out:  # a piece of the prefix changes after it was read
        await hasher._running  # type: ignore[misc]
        out.write(b"x")
    assert await hasher.finish() == hashlib.sha512(data).hexdigest() != hashlib.sha512(path.read_bytes()).hexdigest()
