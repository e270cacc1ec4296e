"""A partner's image into this catalogue's blob store, fetched exactly as a node daemon
fetches it (:class:`vmic.fetch.fetcher.Fetcher`): over the partner's swarm when its list
names a torrent, else over HTTP with Range resume; at most ``hv:size`` bytes either way.

The bytes become a blob only if they hash to the sha512 of the signed list. Complete by
the torrent's piece hashes but not by the sha512: the bytes on disk are checked against
the swarm once more (as a node does) before the partner is blamed. A transfer that
breaks keeps what arrived, and the next sync resumes it.

    <data_dir>/mirror/data/<sha512>[.part]     bytes on their way
    <data_dir>/mirror/torrents/<btih>.*        the partner's torrents and resume data
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..catalogue.blobs import BlobStore
from ..errors import FetchFailed, VmicError
from ..fetch.fetcher import Fetcher
from ..imagelist.model import Image
from ..log import event

log = logging.getLogger("vmic.sync")


class MirrorError(VmicError):
    status = 502
    code = "mirror_failed"


class Mirror:
    def __init__(self, fetcher: Fetcher, blobs: BlobStore) -> None:
        self.fetcher = fetcher
        self.blobs = blobs

    async def fetch(self, image: Image) -> None:
        """Make the blob of ``image`` present, or raise :class:`MirrorError`."""
        if self.blobs.has(image.sha512):
            return
        try:
            source = await self.fetcher.fetch(image, lambda done: None)  # the same fetch as a node's
            if not await self._store(image, source):
                rechecked = await self.fetcher.recheck(image, lambda done: None)
                if rechecked is None or not await self._store(image, rechecked):
                    self.fetcher.drop(image)
                    raise MirrorError(f"image {image.identifier}: bytes do not match the sha512 in the signed list "
                                      f"(list says {image.sha512[:16]}...); not imported")
        except FetchFailed as exc:
            raise MirrorError(str(exc)) from None
        self.fetcher.drop(image)  # the torrent and its resume data: the blob is what stays
        event(log, "mirror.fetched", image=image.identifier, sha512=image.sha512, bytes=image.size)

    async def _store(self, image: Image, source: Path) -> bool:
        self.fetcher.release(image)  # out of the swarm (the file is moved next), kept on disk
        return await self.blobs.adopt(source, image.sha512)
