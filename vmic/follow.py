"""Following one catalogue's signed list: what every follower of a catalogue shares
(the tracker, the seeder, and node daemons).

    follower = ListFollower(CatalogueSource(url, ca, endorser_dn), logger)
    image_list = await follower.fetch(session)      # None if unreachable or refused
    await follower.follow(session, on_list, 60)     # on_list(list) at start, at every event, every 60 s

Each fetch is verified by :func:`vmic.imagelist.verify.verify_signed_list`; the version
may never go back (rollback), and a list that fails leaves the last good one in force,
with the reason logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from .capped import MAX_LIST_BYTES, read_capped
from .errors import ImageListError, ListTooLarge
from .events import events_url, watch_events
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
    list_identifier: str | None = None  #: if set, a list with another identifier is refused
    #: a list of more bytes is refused as list_too_large before it is parsed or checked
    max_list_bytes: int = MAX_LIST_BYTES

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
    """``current`` and ``known`` (image identifier -> sha512 of every image ever accepted)
    may be restored from a follower's state database, so that rollback and
    identifier-reuse checks hold across restarts. ``refused`` is the reason the last
    look failed (None after a good one)."""

    def __init__(self, source: CatalogueSource, logger: logging.Logger, current: ImageList | None = None,
                 known: dict[str, str] | None = None) -> None:
        self.source = source
        self.log = logger
        self.current = current
        self.known: dict[str, str] = dict(known or {})
        self.refused: ImageListError | None = None
        self.unreachable: str | None = None
        #: called with each refusal (a metric, say)
        self.on_refused: Callable[[ImageListError], None] | None = None
        self._looking = asyncio.Lock()

    async def fetch(self, session: aiohttp.ClientSession) -> ImageList | None:
        """The catalogue's list now, verified; None (and the last good list kept) if not."""
        last = self.current.version if self.current is not None else None
        try:
            async with session.get(self.source.list_url) as response:
                response.raise_for_status()
                message = await read_capped(response, self.source.max_list_bytes, "the signed list", ListTooLarge)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            self.unreachable = str(exc) or type(exc).__name__
            event(self.log, "list.unreachable", level=logging.WARNING, catalogue=self.source.url,
                  reason=self.unreachable, kept_version=last)
            return None
        except ListTooLarge as exc:  # reachable, but refused before parsing or checking
            self.unreachable = None
            return self._refused(exc, last)
        self.unreachable = None
        try:
            image_list = await verify_signed_list(
                message, [self.source.ca],
                Subscription(endorser_dn=self.source.endorser_dn, list_identifier=self.source.list_identifier),
                History(last_version=last, known_images=self.known))
        except ImageListError as exc:
            return self._refused(exc, last)
        self.refused = None
        self.current = image_list
        self.known.update({image.identifier: image.sha512 for image in image_list.images})
        return image_list

    def _refused(self, exc: ImageListError, last: int | None) -> None:
        """Keep the last good list; say why this one was refused (status, log, metric)."""
        self.refused = exc
        if self.on_refused is not None:
            self.on_refused(exc)
        event(self.log, "list.refused", level=logging.WARNING, catalogue=self.source.url, reason=str(exc),
              code=exc.code, kept_version=last)
        return None

    async def follow(self, session: aiohttp.ClientSession, on_list: Callable[[ImageList], Awaitable[None]],
                     poll_seconds: float) -> None:
        """Call ``on_list`` with each verified list: now, whenever the catalogue's ``/events``
        stream announces one, and every ``poll_seconds`` as a fallback; one look at a time.
        Runs until cancelled."""

        async def look() -> None:
            async with self._looking:
                image_list = await self.fetch(session)
                if image_list is not None:
                    await on_list(image_list)

        await look()
        stream = events_url(self.source.list_url) or self.source.list_url
        watcher = asyncio.create_task(watch_events(session, stream, look))
        try:
            while True:
                await asyncio.sleep(poll_seconds)
                await look()
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
