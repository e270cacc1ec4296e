"""Following one catalogue's signed list: what every follower of a catalogue shares
(the tracker, the seeder, and node daemons).

    follower = ListFollower(CatalogueSource(url, ca, endorser_dn), logger)
    await follower.restore(signed, accepted_at)     # the raw bytes saved last time, verified again
    image_list = await follower.fetch(session)      # None if unchanged, unreachable or refused
    await follower.follow(session, on_list, 60)     # on_list(list) at start, at every event, every 60 s

Each fetch is verified by :func:`vmic.imagelist.verify.verify_signed_list`; the version
may never go back (rollback), and a list that fails leaves the last good one in force,
with the reason logged. The catalogue's ``/events`` stream says when to look; a
conditional GET (``If-None-Match``) makes the periodic look cheap when nothing changed.
At most ``max_list_bytes`` are read before anything is parsed or checked. What a
follower keeps is the list's signed bytes as fetched (:attr:`ListFollower.signed`),
so that a restart verifies exactly those bytes again rather than trusting a copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from .capped import read_capped
from .catalogue_source import CatalogueSource, tls_context
from .errors import ImageListError, ListTooLarge
from .events import events_url, watch_events
from .imagelist.model import ImageList
from .imagelist.policy import History, Subscription
from .imagelist.verify import verify_signed_list
from .log import event


@dataclass(frozen=True)
class Fetched:
    """One look at a signed list: its bytes (None: unchanged since ``etag``) and ETag."""

    message: bytes | None
    etag: str | None


async def fetch_signed_list(session: aiohttp.ClientSession, url: str, max_bytes: int,
                            etag: str | None = None) -> Fetched:
    """GET a signed list, conditionally (``If-None-Match``) when ``etag`` is given, reading
    at most ``max_bytes`` (:class:`ListTooLarge` beyond, before anything is parsed).
    Unreachable, or an HTTP error: :class:`aiohttp.ClientError` or a timeout. What every
    follower of a list (node, tracker, seeder, partner sync) fetches with."""
    headers = {"If-None-Match": etag} if etag else {}
    async with session.get(url, headers=headers) as response:
        if response.status == 304 and etag:
            return Fetched(None, etag)
        response.raise_for_status()
        message = await read_capped(response, max_bytes, "the signed list", ListTooLarge)
        return Fetched(message, response.headers.get("ETag"))


def follower_session(tls_cas: Iterable[Path | None], timeout: aiohttp.ClientTimeout | None = None,
                     user_agent: str | None = None) -> aiohttp.ClientSession:
    """The HTTP client of a follower: the system's CAs plus each catalogue's ``tls_ca``
    for HTTPS; by default bounded connect and read timeouts (a long image download keeps
    reading); node daemons say who they are (``vmic-node/<name>``)."""
    return aiohttp.ClientSession(timeout=timeout or aiohttp.ClientTimeout(sock_connect=10, sock_read=60),
                                 connector=aiohttp.TCPConnector(ssl=tls_context(tls_cas)),
                                 headers={"User-Agent": user_agent} if user_agent else None)


@dataclass(frozen=True)
class FollowsCatalogue:
    """The settings every follower of a catalogue has (a base of their config dataclasses):
    its ``catalogue`` table (:mod:`vmic.catalogue_source`)."""

    catalogue: CatalogueSource


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
        self.signed: bytes | None = None  #: the signed bytes of ``current``, as fetched
        self.etag: str | None = None  #: the catalogue's ETag of ``signed``
        self.refused: ImageListError | None = None
        self.unreachable: str | None = None
        self.unchanged = False  #: the last look found the list in force unchanged (304)
        #: when (time.time()) the catalogue last answered with a good or unchanged list
        self.last_success: float | None = None
        #: called with each refusal (a metric, say)
        self.on_refused: Callable[[ImageListError], None] | None = None
        self._looking = asyncio.Lock()

    def _subscription(self) -> Subscription:
        return Subscription(endorser_dn=self.source.endorser_dn, list_identifier=self.source.list_identifier)

    async def restore(self, signed: bytes, accepted_at: dt.datetime) -> ImageList | None:
        """Put the list saved at the last run back in force: its signed bytes are verified
        again (signature, CA, endorser, list id; dates as they were when it was accepted).
        Bytes that fail (a state file changed on disk) are refused with the reason, as a
        fetched list would be; the catalogue's next good list takes over."""
        try:
            image_list = await verify_signed_list(signed, [self.source.ca], self._subscription(),
                                                  History(known_images=self.known), accepted_at)
        except ImageListError as exc:
            refused = type(exc)(f"the list saved at the last run was refused: {exc}")
            return self._refused(refused, None)
        self.current, self.signed = image_list, signed
        return image_list

    async def fetch(self, session: aiohttp.ClientSession) -> ImageList | None:
        """The catalogue's list now, verified; None (and the last good list kept) if it is
        unchanged, unreachable or refused."""
        last = self.current.version if self.current is not None else None
        self.unchanged = False
        try:
            fetched = await fetch_signed_list(session, self.source.list_url, self.source.max_list_bytes,
                                              self.etag if self.current is not None else None)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            self.unreachable = str(exc) or type(exc).__name__
            event(self.log, "list.unreachable", level=logging.WARNING, catalogue=self.source.url,
                  reason=self.unreachable, kept_version=last)
            return None
        except ListTooLarge as exc:  # reachable, but refused before parsing or checking
            self.unreachable = None
            return self._refused(exc, last)
        self.unreachable = None
        if fetched.message is None:  # the catalogue serves the list in force
            self.refused, self.unchanged, self.last_success = None, True, time.time()
            return None
        message = fetched.message
        try:
            image_list = await verify_signed_list(message, [self.source.ca], self._subscription(),
                                                  History(last_version=last, known_images=self.known))
        except ImageListError as exc:
            return self._refused(exc, last)
        self.refused, self.unchanged, self.last_success = None, False, time.time()
        self.current, self.signed, self.etag = image_list, message, fetched.etag
        self.known.update({image.identifier: image.sha512 for image in image_list.images})
        return image_list

    async def look(self, session: aiohttp.ClientSession) -> ImageList | None:
        """:meth:`fetch`, one look at a time with :meth:`follow`'s."""
        async with self._looking:
            return await self.fetch(session)

    def _refused(self, exc: ImageListError, last: int | None) -> ImageList | None:
        """Keep the last good list; say why this one was refused (status, log, metric)."""
        self.refused = exc
        if self.on_refused is not None:
            self.on_refused(exc)
        event(self.log, "list.refused", level=logging.WARNING, catalogue=self.source.url, reason=str(exc),
              code=exc.code, kept_version=last)
        return None

    async def follow(self, session: aiohttp.ClientSession, on_list: Callable[[ImageList], Awaitable[None]],
                     poll_seconds: float) -> None:
        """Call ``on_list`` with the verified list: now, whenever the catalogue's ``/events``
        stream announces one, and every ``poll_seconds`` as a fallback (an unchanged list
        again, from the bytes in hand); one look at a time. Runs until cancelled."""

        async def look() -> None:
            async with self._looking:
                image_list = await self.fetch(session)
                if image_list is None and self.unchanged:
                    image_list = self.current  # unchanged: handed over again (what failed then is retried)
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
