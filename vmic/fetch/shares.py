"""A node's origin share of one download (rules: :mod:`vmic.bittorrent.share`).

- Before the torrent is added, the node asks our tracker for its share, so that the
  torrent's first requests to peers already follow its piece priorities.
- Every step (about a second), while the web seed is still on, the share is asked again
  (nodes join and leave); the web seed is removed once the node's slice is complete, and
  added back for good after a stall.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp
import libtorrent as lt

from vmic.bittorrent.share import Share, WebSeedPolicy, priorities
from vmic.bittorrent.tracker_api import NotOurTracker, fetch_share
from vmic.errors import VmicError
from vmic.log import event

log = logging.getLogger("nodecache.swarm")
SHARE_SECONDS = 2.0  #: how often a node asks for its share while it still uses the web seed


@dataclass
class OriginShares:
    btih: str
    url: str | None  #: where to ask for the share (None: plain BitTorrent)
    web_seeds: list[str]  #: the torrent's
    handle: lt.torrent_handle | None = None  #: set once the torrent is added
    policy: WebSeedPolicy = field(default_factory=WebSeedPolicy)
    _asked: float = 0.0

    def __post_init__(self) -> None:
        if not self.web_seeds:
            self.url = None  # nothing to spare the origin of

    async def first(self, http: aiohttp.ClientSession, num_pieces: int, known: Sequence[bool] = ()
                    ) -> list[int] | None:
        """Ask before the torrent is added; the piece priorities to add it with, or None.
        ``known``: pieces every node has from the start (zeros), in nobody's share."""
        self.policy.wanted = [p for p in range(num_pieces) if not (known and known[p])]
        share = await self._ask(http) if self.url is not None else None
        if share is None:
            return None
        self.policy.share, self._asked = share, SHARE_SECONDS
        return priorities(share, num_pieces, self.policy.wanted)

    async def step(self, http: aiohttp.ClientSession, have: list[bool], seconds: float) -> None:
        if self.url is None or self.handle is None:
            return
        self._asked -= seconds
        if self.policy.web_seed and not self.policy.fell_back and self._asked <= 0 and not all(have):
            self._asked = SHARE_SECONDS
            share = await self._ask(http)  # None: asked again later
            if share is not None and share != self.policy.share:
                event(log, "swarm.share", btih=self.btih, share=f"{share.index}/{share.count}")
                self.policy.share = share
                self.handle.prioritize_pieces(priorities(share, len(have), self.policy.wanted))
        was = self.policy.web_seed
        now = self.policy.step(have, seconds)
        if now != was:
            for url in self.web_seeds:
                if now:
                    self.handle.add_url_seed(url)
                else:
                    self.handle.remove_url_seed(url)
            share = self.policy.share
            event(log, "swarm.web_seed", on=now, btih=self.btih, pieces=sum(have), of=len(have),
                  share=f"{share.index}/{share.count}" if share else None, why="stalled" if now else "share done")

    async def _ask(self, http: aiohttp.ClientSession) -> Share | None:
        """The tracker's answer; None if there is none now. A tracker that does not know
        the request (a stock tracker: 404 or 400) is not asked again."""
        assert self.url is not None
        try:
            async with asyncio.timeout(5):
                return await fetch_share(http, self.url)
        except NotOurTracker as exc:
            event(log, "swarm.no_shares", btih=self.btih, reason=str(exc))
            self.url = None
            return None
        except (aiohttp.ClientError, asyncio.TimeoutError, VmicError) as exc:
            event(log, "swarm.share_unanswered", level=logging.DEBUG, btih=self.btih,
                  reason=str(exc) or type(exc).__name__)
            return None
