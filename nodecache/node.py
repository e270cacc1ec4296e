"""The node cache daemon, assembled: follow, plan, fetch, stage, seed, evict.

    node = await build(config)   # nodecache.wiring: every part built once and injected here
    await node.start()           # sweep leftovers, verify the saved lists, reconcile, seed what is held
    await node.run()             # follow every catalogue, and keep house, until cancelled

Its parts (each testable with fakes of its neighbours): the lists in force
(:class:`.lists.CatalogueLists`), the pure planner (:mod:`.planner`), the jobs that fetch
and stage (:class:`.jobs.JobRunner`), what is held and who uses it
(:class:`.cache.CacheStore`), images on demand (:class:`.keeper.ImageKeeper`), the
storage (:mod:`.storage`) and the provisioning shim (:mod:`.provision`). This class only
orders them in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from vmic.fetch.fetcher import Fetcher
from vmic.fetch.swarm import Swarm
from vmic.log import event

from . import planner
from .cache import CacheStore
from .config import NodeConfig
from .errors import NodeCacheError
from .evict import Plan as EvictionPlan
from .jobs import Job, JobRunner
from .keeper import ImageKeeper
from .lists import CatalogueLists
from .metrics import Metrics
from .provision.provisioner import Provisioner
from .state import HeldImage, State
from .storage.base import Storage

log = logging.getLogger("nodecache")
HOUSEKEEPING_SECONDS = 60.0


@dataclass
class Node:
    config: NodeConfig
    policy: planner.Policy
    state: State
    metrics: Metrics
    storage: Storage
    swarm: Swarm
    http: aiohttp.ClientSession
    fetcher: Fetcher
    lists: CatalogueLists
    runner: JobRunner
    cache: CacheStore
    keeper: ImageKeeper
    provisioner: Provisioner
    clock: Callable[[], float]

    def __post_init__(self) -> None:
        self._planning = asyncio.Lock()
        self._first_seen: dict[str, float] = {}

    @property
    def jobs(self) -> dict[str, Job]:
        return self.runner.jobs

    # --- life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        await self.lists.restore()
        swept = await self.storage.sweep()
        if swept:
            event(log, "node.swept", leftovers=swept)
        await self.cache.reconcile()
        await self.swarm.start()
        if self.config.seed:
            listed = self.lists.listed()
            await self.fetcher.seed(self.cache.images_of(listed, await self.state.images()))

    async def close(self) -> None:
        await self.runner.close()
        await self.swarm.close()  # saves resume data: a restart continues where this one stopped
        await self.http.close()
        await self.state.close()

    async def run(self) -> None:
        """Follow every catalogue, and keep house, until cancelled."""
        loops = self.lists.follow(self.http, self.config.poll_interval, self.plan)
        tasks = [asyncio.create_task(self._housekeeping()), *(asyncio.ensure_future(loop) for loop in loops)]
        try:
            await self.plan()  # the last good lists, while the catalogues are asked
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def refresh(self) -> None:
        """Look at every catalogue's list now (what ``nodecache refresh`` asks), then plan."""
        await self.lists.refresh(self.http)
        await self.plan()

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_SECONDS)
            with contextlib.suppress(NodeCacheError):
                reaped = await self.provisioner.reap()
                if reaped:
                    event(log, "node.reaped", vms=reaped)
            with contextlib.suppress(NodeCacheError):
                await self.plan()

    async def plan(self) -> None:
        """Start the jobs the planner asks for; then evict what should go."""
        async with self._planning:
            listed = self.lists.listed()
            held = planner.held_states((r.sha512, r.state, r.reason) for r in await self.state.images())
            decided = planner.plan(listed, held, set(self.runner.jobs), self.runner.failed_at, self._first_seen,
                                   self.clock(), self.policy)
            self._first_seen = decided.first_seen
            for decision in decided.to_fetch():
                self.runner.start(decision.image, decision.catalogue)
            await self.cache.relabel(listed)
            await self.cache.gc(listed)
            self._count_images(await self.state.images())

    # --- operations (the local API) -----------------------------------------------------------

    async def ensure(self, wanted: str, progress: Callable[[dict[str, Any]], None] | None = None) -> HeldImage:
        return await self.keeper.ensure(wanted, progress)

    async def held(self, wanted: str) -> HeldImage | None:
        return await self.keeper.held(wanted)

    def job_for(self, wanted: str) -> Job:
        return self.keeper.job_for(wanted)

    async def evict(self, wanted: str) -> HeldImage:
        return await self.keeper.evict(wanted)

    async def gc(self) -> EvictionPlan:
        return await self.keeper.gc()

    # --- status ---------------------------------------------------------------------------------

    def _count_images(self, records: list[HeldImage]) -> None:
        for state in ("staged", "fetching", "refused", "failed", "evicted"):
            self.metrics.images.labels(state).set(sum(1 for r in records if r.state == state))

    async def refresh_metrics(self) -> None:
        self._count_images(await self.state.images())
        down, up = self.swarm.payload_by_torrent()
        m = self.metrics
        m.bytes_down.inc(m.down_seen.increase(down))  # counters: a torrent removed or re-added never lowers them
        m.bytes_up.inc(m.up_seen.increase(up))
        m.piece_failures.inc(m.failures_seen.increase({"": self.swarm.hash_failures}))

    async def status(self) -> dict[str, Any]:
        records = await self.state.images()
        refs = await self.state.refs()
        return {
            "backend": self.storage.name,
            "catalogues": self.lists.to_json(),
            "images": [{**r.to_json(), "references": [x.holder for x in refs if x.sha512 == r.sha512]}
                       for r in records],
            "jobs": [job.to_json() for job in self.runner.jobs.values()],
            "cache": {"used": sum(r.size for r in records if r.state == "staged"),
                      "capacity": await self.cache.capacity(),
                      "high_watermark": self.config.high_watermark, "low_watermark": self.config.low_watermark},
        }
