"""Images on demand: resolve a name against the lists in force, stage it now if needed,
and hold it for a user (a VM) by reference. What the provisioning shim and the local
API's ``/ensure``, ``/evict``, ``/gc`` and ``/refs`` use.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vmic.imagelist.model import Image

from .cache import CacheStore
from .errors import UnknownImage
from .evict import Plan as EvictionPlan
from .jobs import Job, JobRunner
from .lists import CatalogueLists
from .planner import find_listing
from .state import HeldImage, State


class ImageKeeper:
    def __init__(self, lists: CatalogueLists, runner: JobRunner, cache: CacheStore, state: State) -> None:
        self.lists = lists
        self.runner = runner
        self.cache = cache
        self.state = state

    def current(self) -> list[Image]:
        """The images of the lists in force that have not expired."""
        return [entry.image for entry in self.lists.listed().values() if not entry.expired]

    async def record(self, sha512: str) -> HeldImage | None:
        return await self.state.get(sha512)

    async def held(self, wanted: str) -> HeldImage | None:
        return await self.cache.held(wanted, self.lists.listed())

    def job_for(self, wanted: str) -> Job:
        """The job that stages ``wanted`` (started now if there is none)."""
        entry = find_listing(self.lists.listed(), wanted)
        if entry is None:
            raise UnknownImage(f"no followed list names an image {wanted!r}")
        return self.runner.start(entry.image, entry.catalogue)

    async def ensure(self, wanted: str, progress: Callable[[dict[str, Any]], None] | None = None) -> HeldImage:
        """The staged base of an image (identifier, or name/title for its newest version),
        fetching and staging it now if needed (``progress`` gets the job's state twice a second)."""
        record = await self.held(wanted)
        if record is not None and record.state == "staged":
            await self.state.touch(record.sha512)
            return record
        await self.runner.wait(self.job_for(wanted), progress)
        staged = await self.held(wanted)  # as the listing asked for names it
        if staged is None or staged.state != "staged":
            raise UnknownImage(f"image {wanted!r} was staged, then evicted or revoked at once; ensure it again")
        return staged

    async def evict(self, wanted: str) -> HeldImage:
        return await self.cache.evict(wanted, self.lists.listed())

    async def gc(self) -> EvictionPlan:
        return await self.cache.gc(self.lists.listed())

    async def add_reference(self, wanted: str, holder: str, disk: str = "") -> HeldImage:
        return await self.cache.add_reference(wanted, holder, disk, self.lists.listed())

    async def drop_reference(self, holder: str) -> bool:
        return await self.cache.drop_reference(holder)
