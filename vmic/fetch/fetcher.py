"""One way to get an image's published bytes, whatever carries them: the swarm when the
signed list names a torrent, else HTTP (Range resume). What a node daemon fetches with,
and what partner mirroring fetches with. Also what becomes of those bytes afterwards:
kept to seed, or dropped. Nothing here trusts the bytes: the caller checks them against
the signed sha512 (a node while staging, a catalogue while storing the blob).

    <data>/<sha512>          the published bytes (what the swarm seeds)
    <data>/<sha512>.part     an HTTP download in progress
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable
from pathlib import Path

import aiohttp

from ..errors import FetchFailed, MalformedTorrent
from ..imagelist.extensions import BTIH
from ..imagelist.model import Image
from ..log import event
from ..torrents import Torrent
from .over_http import fetch_http
from .swarm import Swarm

log = logging.getLogger("vmic.fetch")


class Fetcher:
    def __init__(self, swarm: Swarm, http: aiohttp.ClientSession, data_dir: Path, torrent_dir: Path,
                 on_http_bytes: Callable[[int], None] = lambda n: None) -> None:
        self.swarm = swarm
        self.http = http
        self.data_dir = data_dir
        self.torrent_dir = torrent_dir
        self.on_http_bytes = on_http_bytes  #: bytes that came over plain HTTP (a metric)

    async def fetch(self, image: Image, progress: Callable[[int], None],
                    on_sha512: Callable[[str], None] | None = None) -> Path:
        """The image's published bytes on disk (not yet trusted: staging checks them).
        ``on_sha512``: told the file's sha512 where it was hashed while arriving (swarm)."""
        if BTIH in image.extra:
            torrent = await self.swarm.torrent_for(self.http, image)
            return await self.swarm.fetch(image, torrent, progress, self.http, on_sha512=on_sha512)
        before = 0

        def counted(done: int) -> None:
            nonlocal before
            self.on_http_bytes(max(0, done - before))
            before = done
            progress(done)

        return await fetch_http(self.http, image, self.data_dir, counted)

    async def recheck(self, image: Image, progress: Callable[[int], None]) -> Path | None:
        """Complete by the piece hashes but not by the sha512: before blaming the publisher,
        make sure the bytes on disk are what the swarm delivered (None: no swarm to ask)."""
        if BTIH not in image.extra:
            return None
        torrent = await self.swarm.torrent_for(self.http, image)
        return await self.swarm.recheck(image, torrent, progress, self.http)

    def release(self, image: Image) -> None:
        """Stop sharing the bytes of ``image``; keep them (and the torrent) on disk."""
        if BTIH in image.extra:
            self.swarm.drop(str(image.extra[BTIH]), delete=False)

    def drop(self, image: Image) -> None:
        """The published bytes of ``image`` (and their torrent) are not kept."""
        if BTIH in image.extra:
            self.swarm.drop(str(image.extra[BTIH]), delete=True)
        self._unlink(image.sha512)

    def drop_sha512(self, sha512: str) -> None:
        """As :meth:`drop`, knowing only the bytes' sha512 (the image may be listed no more)."""
        for path in self.torrent_dir.glob("*.torrent"):
            if path.is_file() and _torrent_name(path) == sha512:
                self.swarm.drop(path.stem, delete=True)
        self._unlink(sha512)

    def _unlink(self, sha512: str) -> None:
        for path in (self.data_dir / sha512, self.data_dir / f"{sha512}.part"):
            path.unlink(missing_ok=True)

    def drop_orphans(self, known: set[str]) -> None:
        """Published bytes of no image the node knows of (a crash between steps)."""
        if not self.data_dir.is_dir():
            return
        for path in self.data_dir.iterdir():
            if path.name.split(".")[0] not in known:
                path.unlink()
                event(log, "node.reconcile_orphan", path=str(path))

    async def seed(self, images: Iterable[Image]) -> None:
        """Seed each image whose published bytes the node still has."""
        for image in images:
            if BTIH in image.extra and (self.data_dir / image.sha512).is_file():
                with contextlib.suppress(FetchFailed):
                    self.swarm.seed(image, await self.swarm.torrent_for(self.http, image))


def _torrent_name(path: Path) -> str:
    try:
        return str(Torrent.parse(path.read_bytes()).info.name())
    except MalformedTorrent:
        return ""
