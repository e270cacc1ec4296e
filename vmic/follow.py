"""Following one catalogue's signed list: what every follower of a catalogue shares
(the tracker, the seeder, and node daemons).

    follower = ListFollower(CatalogueSource(url, ca, endorser_dn), logger)
    image_list = await follower.fetch(session)      # None if unreachable or refused

Each fetch is verified by :func:`vmic.imagelist.verify.verify_signed_list`; the version
may never go back (rollback), and a list that fails leaves the last good one in force,
with the reason logged.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from .errors import ImageListError
from .imagelist.model import ImageList
from .imagelist.policy import History, Subscription
from .imagelist.verify import verify_signed_list
from .log import event


@dataclass(frozen=True)
class CatalogueSource:
    """Which catalogue to follow and whom to trust for its list."""

    url: str  #: the catalogue's base URL
    ca: Path  #: CA file or directory of its endorser
    endorser_dn: str

    @property
    def list_url(self) -> str:
        return f"{self.url.rstrip('/')}/imagelist"


@dataclass(frozen=True)
class FollowsCatalogue:
    """The settings every follower of a catalogue has (a base of their config dataclasses)."""

    catalogue_url: str
    catalogue_ca: Path
    endorser_dn: str

    @property
    def source(self) -> CatalogueSource:
        return CatalogueSource(self.catalogue_url, self.catalogue_ca, self.endorser_dn)


class ListFollower:
    def __init__(self, source: CatalogueSource, logger: logging.Logger) -> None:
        self.source = source
        self.log = logger
        self.current: ImageList | None = None

    async def fetch(self, session: aiohttp.ClientSession) -> ImageList | None:
        """The catalogue's list now, verified; None (and the last good list kept) if not."""
        last = self.current.version if self.current is not None else None
        try:
            async with session.get(self.source.list_url) as response:
                message = await response.read()
            image_list = await verify_signed_list(message, [self.source.ca],
                                                  Subscription(endorser_dn=self.source.endorser_dn),
                                                  History(last_version=last))
        except (aiohttp.ClientError, asyncio.TimeoutError, ImageListError) as exc:
            event(self.log, "list.refused", level=logging.WARNING, catalogue=self.source.url, reason=str(exc),
                  kept_version=last)
            return None
        self.current = image_list
        return image_list
