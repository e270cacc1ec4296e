"""Torrents for catalogued images (libtorrent), with the catalogue as web seed.

- *BitTorrent v1* by default, *hybrid* v1+v2 on request (``torrent_format``). Hybrid
  torrents were meant to let v1 clients interoperate, but Debian 12's stock clients
  do not: Transmission 3.00 refuses to open them (it reads them from 4.0 on), and
  aria2c 1.36 computes a different v1 info hash for them, so it can use the web seed
  but never join the swarm (both shown in tests/test_torrents.py). Images are
  verified whole against the sha512 of the signed list anyway, so v1's SHA-1 piece
  hashes guard transfers, not trust. A site whose peers are all libtorrent may choose
  hybrid and get per-16-KiB SHA-256 merkle verification.
- The torrent's single file is named after the image's sha512, exactly as the blob is
  named in the catalogue's store, so a seeder serves the blob store in place.
- The catalogue's ``/images/<identifier>`` URL is the web seed (BEP 19), so a download
  can finish even when no seeder or peer is up.
- *Private* (BEP 27): clients use only the trackers given, no DHT or peer exchange;
  a private cloud's swarm stays inside it.

Piece size (:func:`piece_size_for`): about 2,048 pieces of the image's *data*, a power
of two (v2 requires one), at least 256 KiB (fewer, larger requests on a LAN) and at most
16 MiB (a corrupt piece costs at most 16 MiB to fetch again), and no more than
:data:`MAX_PIECES` pieces in all. So a dense 256 MiB -> 256 KiB, 2 GiB -> 1 MiB, 20 GiB
-> 16 MiB; a 4 GiB image holding 512 MiB -> 256 KiB, 20 GiB holding 2 GiB -> 1 MiB.
Counted by the data, a sparse image's swarm moves as many pieces as a dense image of
its data would (measured: with 2 MiB pieces for 510 MiB of data in 4 GiB, staging on
4 nodes took 1.8 times as long as a dense 510 MiB image's 256 KiB pieces). Where the
data lies counts too: a piece holding one 4 KiB block of file-system metadata travels
whole, so pieces are halved while those holding data would carry more than
:data:`ZERO_SLACK` of zeros around it (measured: 20 GiB holding 2 GiB, a block of
metadata every 128 MiB: 1 MiB pieces moved 1.107 bytes per data byte to each node,
512 KiB pieces 1.056; see :func:`carried_bytes`).

Sparse images (:func:`v1_piece_hashes`): a v1 piece lying wholly in a hole of the blob
gets the SHA-1 of a zero piece without being read; the others are read and hashed on
every core. The torrent is byte for byte what libtorrent would make (a test compares),
in the time the data takes. Nodes use the same fact the other way round
(:mod:`vmic.fetch.zero_pieces`).
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libtorrent as lt

from .errors import MalformedTorrent
from .sparse import data_extents

FORMATS = ("v1", "hybrid")
MIN_PIECE = 256 * 2**10
MAX_PIECE = 16 * 2**20
TARGET_PIECES = 2048
#: 20 bytes of SHA-1 each: at most 1.25 MiB of piece hashes in a torrent
MAX_PIECES = 65536
#: the zeros that pieces holding data may carry around it, as a share of the data
ZERO_SLACK = 0.05


def piece_size_for(size: int, data: int | None = None, extents: Sequence[tuple[int, int]] = ()) -> int:
    """The piece size for an image of ``size`` bytes holding ``data`` bytes of data
    (the rest holes; None: dense) in ``extents`` (``(first, after)`` byte ranges in order;
    none given: the data's place is not taken into account)."""
    basis = size if data is None else min(size, data)
    piece = MIN_PIECE
    while piece < MAX_PIECE and (piece * TARGET_PIECES < basis or piece * MAX_PIECES < size):
        piece *= 2
    while (extents and piece > MIN_PIECE and piece // 2 * MAX_PIECES >= size
           and carried_bytes(extents, piece, size) > (1 + ZERO_SLACK) * basis):
        piece //= 2
    return piece


def piece_size_of(path: Path) -> int:
    """:func:`piece_size_for` the file at ``path``, its data where the file system says."""
    size, data, blocks = _where_data_is(path)
    return piece_size_for(size, data, blocks)


def _where_data_is(path: Path) -> tuple[int, int, list[tuple[int, int]]]:
    """The file's size, its data bytes and the blocks they touch (:func:`touched_blocks`)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        return (size, *touched_blocks(data_extents(fd, 0, size), size))
    finally:
        os.close(fd)


def touched_blocks(extents: Iterable[tuple[int, int]], size: int) -> tuple[int, list[tuple[int, int]]]:
    """The bytes in ``extents`` (in order), and the :data:`MIN_PIECE` blocks they touch,
    merged into runs: pieces of every allowed size carry as much for these as for the
    extents, and there is at most one run per two blocks however scattered the data."""
    data = 0
    blocks: list[tuple[int, int]] = []
    for first, after in extents:
        data += after - first
        start, end = first // MIN_PIECE * MIN_PIECE, min(-(-after // MIN_PIECE) * MIN_PIECE, size)
        if blocks and start <= blocks[-1][1]:
            blocks[-1] = (blocks[-1][0], max(blocks[-1][1], end))
        else:
            blocks.append((start, end))
    return data, blocks


def carried_bytes(extents: Sequence[tuple[int, int]], piece: int, size: int) -> int:
    """The bytes of the ``piece``-sized pieces of a ``size``-byte image that hold any of
    ``extents`` (in order): what a swarm moves of it, zeros around the data included."""
    total, last = 0, -1
    for first, after in extents:
        if after <= first:
            continue
        start, end = max(first // piece, last + 1), (after - 1) // piece
        if end >= start:
            total += (end - start + 1) * piece
            last = end
    if last >= 0 and last == (size - 1) // piece:
        total -= (last + 1) * piece - size  # the last piece is short
    return total


@dataclass(frozen=True)
class Torrent:
    data: bytes  #: the bencoded .torrent file
    btih: str  #: v1 info hash (hex, 40 characters)
    btmh: str | None  #: v2 info hash (hex, 64 characters, SHA-256); None for a v1-only torrent
    piece_size: int

    @property
    def info(self) -> lt.torrent_info:
        return lt.torrent_info(self.data)

    @property
    def trackers(self) -> list[str]:
        """The announce URLs (``announce``, then every tier of ``announce-list``)."""
        metainfo: Any = lt.bdecode(self.data)  # a bencoded dict: its shape is checked below, item by item
        urls = [metainfo.get(b"announce", b"")] + [u for tier in metainfo.get(b"announce-list", []) for u in tier]
        return list(dict.fromkeys(u.decode("utf-8", "replace") for u in urls if u))

    @property
    def web_seeds(self) -> list[str]:
        """The BEP 19 web seeds (``url-list``: one URL or a list)."""
        metainfo: Any = lt.bdecode(self.data)
        urls = metainfo.get(b"url-list", [])
        return [u.decode("utf-8", "replace") for u in ([urls] if isinstance(urls, bytes) else urls) if u]

    def magnet(self) -> str:
        return lt.make_magnet_uri(self.info)

    @classmethod
    def parse(cls, data: bytes) -> Torrent:
        """A torrent from its bytes, or :class:`~vmic.errors.MalformedTorrent`."""
        try:
            info = lt.torrent_info(data)
        except RuntimeError as exc:
            raise MalformedTorrent(f"not a torrent: {exc}") from None
        hashes = info.info_hashes()
        return cls(data, str(hashes.v1), str(hashes.v2) if hashes.has_v2() else None, info.piece_length())


def make_torrent(blob: Path, web_seed: str, trackers: tuple[str, ...] = (), comment: str = "",
                 torrent_format: str = "v1") -> Torrent:
    """Hash ``blob`` (blocking: run it in an executor) into a private torrent."""
    blob = Path(blob)
    flags = lt.create_torrent.v1_only if torrent_format == "v1" else 0
    size, data, blocks = _where_data_is(blob)
    creator = lt.create_torrent(lt.list_files(str(blob)), piece_size_for(size, data, blocks), flags)
    creator.set_priv(True)
    creator.add_url_seed(web_seed)
    for tier, tracker in enumerate(trackers):
        creator.add_tracker(tracker, tier)
    creator.set_creator("vmic")
    if comment:
        creator.set_comment(comment)
    if torrent_format == "v1":
        for index, digest in enumerate(v1_piece_hashes(blob, creator.piece_length(), blocks)):
            creator.set_hash(index, digest)
    else:  # v2 hashes every 16 KiB block into a merkle tree: libtorrent's own pass
        lt.set_piece_hashes(creator, str(blob.parent))
    return Torrent.parse(lt.bencode(creator.generate()))


@functools.cache
def zero_piece_hash(length: int) -> bytes:
    """The SHA-1 of a piece of ``length`` zeros (what a v1 torrent lists for one)."""
    return hashlib.sha1(bytes(length)).digest()


def v1_piece_hashes(path: Path, piece_size: int, blocks: Sequence[tuple[int, int]]) -> Iterator[bytes]:
    """The SHA-1 of each ``piece_size`` piece of ``path``, in order: pieces outside
    ``blocks`` (where the data is, :func:`touched_blocks`) from memory, the others read
    and hashed by a thread per core."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        count = -(-size // piece_size)
        has_data = [False] * count
        for first, after in blocks:
            for index in range(first // piece_size, -(-after // piece_size)):
                has_data[index] = True

        def piece_hash(index: int) -> bytes:
            length = min(piece_size, size - index * piece_size)
            if not has_data[index]:
                return zero_piece_hash(length)
            data = os.pread(fd, length, index * piece_size)
            if len(data) != length:
                raise OSError(f"{path} changed while it was hashed")
            return hashlib.sha1(data).digest()

        with ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="vmic-pieces") as pool:
            yield from pool.map(piece_hash, range(count))
    finally:
        os.close(fd)
