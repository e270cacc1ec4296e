"""The lists in force on a node: one :class:`vmic.follow.ListFollower` per catalogue,
kept across restarts.

Each accepted list is saved as its signed bytes; at start each saved list is verified
again (a state file changed on disk is refused, with the reason in ``nodecache status``,
and the catalogue's next good list takes over). A refused or unreachable list leaves
the last good one in force.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from vmic.follow import ListFollower
from vmic.health import Check, list_checks
from vmic.imagelist.model import ImageList
from vmic.log import event
from vmic.service_metrics import FollowerCollector

from .metrics import Metrics
from .planner import Listed, listed_images
from .state import State

log = logging.getLogger("nodecache")
OnList = Callable[[str, ImageList], Awaitable[None]]


class CatalogueLists:
    def __init__(self, followers: dict[str, ListFollower], state: State, metrics: Metrics) -> None:
        self.followers = followers  #: by catalogue URL
        self.state = state
        self.metrics = metrics
        self._saved: dict[str, bytes] = {}  #: the signed bytes last saved, by catalogue
        for follower in followers.values():
            follower.on_refused = lambda exc: metrics.verification_failures.labels("list", exc.code).inc()
        metrics.registry.register(FollowerCollector("vmic_node", lambda: self.followers))

    async def restore(self) -> None:
        """Each catalogue's last accepted list, verified again from its signed bytes."""
        for url, follower in self.followers.items():
            follower.known = await self.state.known_images(url)
            saved = await self.state.last_list(url)
            if saved is not None and await follower.restore(*saved) is not None:
                self._saved[url] = saved[0]

    def listed(self, now: dt.datetime | None = None) -> dict[tuple[str, str], Listed]:
        """Every image of every list in force, by (catalogue, identifier)."""
        return listed_images({url: f.current for url, f in self.followers.items()},
                             now or dt.datetime.now(dt.timezone.utc))

    def version(self, catalogue: str) -> int:
        current = self.followers[catalogue].current if catalogue in self.followers else None
        return current.version if current is not None else 0

    async def accepted(self, url: str, image_list: ImageList) -> None:
        """Save and announce a newly accepted list (the same list handed over again at a
        poll is neither saved nor logged again)."""
        signed = self.followers[url].signed
        assert signed is not None
        if self._saved.get(url) == signed:
            return
        self._saved[url] = signed  # before the save: a look racing this one finds it taken
        try:
            await self.state.save_list(url, image_list, signed)
        except BaseException:
            self._saved.pop(url, None)
            raise
        event(log, "node.list_accepted", catalogue=url, version=image_list.version, images=len(image_list.images))

    async def refresh(self, http: aiohttp.ClientSession) -> bool:
        """Look at every catalogue now; whether any list changed."""
        changed = False
        for url, follower in self.followers.items():
            image_list = await follower.fetch(http)
            if image_list is not None:
                await self.accepted(url, image_list)
                changed = True
        return changed

    def follow(self, http: aiohttp.ClientSession, poll_seconds: float, on_list: Callable[[], Awaitable[None]]
               ) -> list[Awaitable[None]]:
        """One follow loop per catalogue: each accepted list is saved, then ``on_list()``."""
        loops: list[Awaitable[None]] = []
        for url, follower in self.followers.items():
            async def accepted(image_list: ImageList, url: str = url) -> None:
                await self.accepted(url, image_list)
                await on_list()
            loops.append(follower.follow(http, accepted, poll_seconds))
        return loops

    def readiness(self, now: dt.datetime | None = None) -> list[Check]:
        """Per catalogue: is a verified list in force, and not expired?"""
        return list_checks(self.followers, now or dt.datetime.now(dt.timezone.utc))

    def to_json(self) -> list[dict[str, Any]]:
        result = []
        for url, follower in self.followers.items():
            current = follower.current
            result.append({
                "url": url,
                "version": current.version if current else None,
                "expires": current.expires.isoformat() if current else None,
                "images": len(current.images) if current else 0,
                "refused": str(follower.refused) if follower.refused else None,
                "refused_code": follower.refused.code if follower.refused else None,
                "unreachable": follower.unreachable,
            })
        return result
