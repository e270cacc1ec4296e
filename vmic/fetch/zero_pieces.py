"""Pieces of a download that need not travel: those the signed torrent says are zeros.

Golden images are mostly holes. A v1 torrent lists the SHA-1 of every piece; a piece
whose SHA-1 is that of a piece of zeros of its length *is* zeros (finding other bytes
with that SHA-1 is a second-preimage attack on SHA-1, which nobody can mount today). The
torrent is the one the signed list names by its info hash (``vmic:btih``, checked in
:meth:`vmic.fetch.swarm.Swarm.torrent_for`), so the claim rests on the list's signature
and SHA-1's second-preimage resistance, nothing the node guesses: a hole already in a
file on disk, or a run of zeros a peer offers, counts for nothing.

A new download's file is created as one hole of the image's size and those pieces are
declared present (libtorrent's ``have_pieces``): they are never requested, stay holes,
and are served to peers as the zeros they are. Only v1-only torrents: a hybrid
torrent's v2 side would need the zero blocks' merkle hashes too. A file already on disk
(a download cut before its resume data was saved) is not declared into: libtorrent
checks it piece by piece as always.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from vmic.torrents import zero_piece_hash


def zero_pieces(hashes: Sequence[bytes], piece_size: int, total_size: int) -> list[bool]:
    """For each piece, whether its SHA-1 (``hashes``) is that of zeros of its length."""
    if not hashes:
        return []
    zero, zero_last = zero_piece_hash(piece_size), zero_piece_hash(total_size - (len(hashes) - 1) * piece_size)
    return [digest == (zero_last if index == len(hashes) - 1 else zero) for index, digest in enumerate(hashes)]


def create_hole(path: Path, size: int) -> bool:
    """Create ``path`` (0600) as one hole of ``size`` bytes; False if it already exists."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)
    return True
