"""What the node holds: staged images, who uses them (references), and what goes
(eviction). The database is a record; the storage is the truth: :meth:`reconcile`
makes them agree at start-up.

Eviction and new references never interleave (one lock), so a base is never evicted
while a VM takes it; a reference whose disk is gone is dropped, one whose disk is on
another base is kept and reported (never evict on doubt).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from vmic.imagelist.model import Image
from vmic.log import event

from . import evict
from .errors import InUse, UnknownImage
from .evict import Plan as EvictionPlan
from .metrics import Metrics
from .planner import Listed, Listings, by_sha512, find_listing
from .state import HeldImage, Reference, State
from .storage.base import Base, DiskCheck, Storage, held_bytes

log = logging.getLogger("nodecache")


class SeedCopies(Protocol):
    """The published bytes the node keeps to seed (:class:`vmic.fetch.fetcher.Fetcher`)."""

    data_dir: Path

    def drop_sha512(self, sha512: str) -> None: ...

    def drop_orphans(self, known: set[str]) -> None: ...


def as_listed(record: HeldImage, entry: Listed) -> HeldImage:
    """The record of shared bytes under the name of one listing of them."""
    image = entry.image
    if (record.catalogue, record.identifier) == entry.key:
        return record
    return record.changed(identifier=image.identifier, title=image.title, version=image.version,
                          catalogue=entry.catalogue)


class CacheStore:
    def __init__(self, state: State, storage: Storage, fetcher: SeedCopies, metrics: Metrics,
                 cancel_job: Callable[[str], None], capacity: int, high_watermark: float,
                 low_watermark: float) -> None:
        self.state = state
        self.storage = storage
        self.fetcher = fetcher
        self.metrics = metrics
        self.cancel_job = cancel_job
        self.capacity_setting = capacity  #: 0: the storage's own size
        self.high_watermark, self.low_watermark = high_watermark, low_watermark
        self.lock = asyncio.Lock()  #: eviction and new references never interleave

    async def capacity(self) -> int:
        return self.capacity_setting or await self.storage.capacity()

    async def held(self, wanted: str, listed: Listings) -> HeldImage | None:
        """The record of ``wanted`` (sha512, identifier, or a listed name's newest version),
        as the listing that names it sees it: bytes named by two listings are held once,
        and each listing's name resolves to its own identifier."""
        records = await self.state.images()
        by_sha = {r.sha512: r for r in records}
        if wanted in by_sha:
            return by_sha[wanted]
        entry = find_listing(listed, wanted)
        if entry is not None:
            record = by_sha.get(entry.image.sha512)
            return as_listed(record, entry) if record is not None else None
        return next((r for r in records if r.identifier == wanted), None)

    # --- start-up: the storage is the truth -----------------------------------------------------

    async def reconcile(self) -> None:
        """Make the database agree with what is really staged on disk or in LVM."""
        on_disk = {s.sha512: s for s in await self.storage.staged()}
        records = {r.sha512: r for r in await self.state.images()}
        for sha512, record in records.items():
            if record.state == "staged" and sha512 not in on_disk:
                await self.state.forget(sha512)
                event(log, "node.reconcile_vanished", level=logging.WARNING, image=record.identifier)
            elif record.state == "staged" and on_disk[sha512].location != record.location:
                # the cache directory moved: the base is the same, its path is new
                await self.state.put(record.changed(location=on_disk[sha512].location))
                event(log, "node.reconcile_moved", image=record.identifier, location=on_disk[sha512].location)
            elif record.state == "fetching" and sha512 not in on_disk:
                await self.state.put(record.changed(state="failed",
                                                    reason="interrupted (the daemon stopped); resumes"))
        for sha512, staged in on_disk.items():
            found = records.get(sha512)
            if found is None or found.state != "staged":
                meta = staged.metadata
                await self.state.put(HeldImage(sha512, meta.get("identifier", ""), found.title if found else "",
                                               meta.get("version", ""), meta.get("catalogue", ""), "staged", "",
                                               staged.location, staged.format, held_bytes(staged, self.fetcher.data_dir),
                                               float(meta.get("staged", time.time())), time.time()))
                event(log, "node.reconcile_adopted", image=meta.get("identifier"), location=staged.location)
        self.fetcher.drop_orphans(set(on_disk) | set(records))

    # --- eviction ---------------------------------------------------------------------------------

    async def evict(self, wanted: str, listed: Listings, reason: str = "operator") -> HeldImage:
        async with self.lock:
            record = await self.held(wanted, listed)
            if record is None:
                raise UnknownImage(f"the cache holds no image {wanted!r}")
            refs = [r.holder for r in await self.state.refs() if r.sha512 == record.sha512]
            if refs:
                raise InUse(f"image {record.identifier} is in use by {', '.join(refs)}")
            await self._remove(record, reason)
            return record

    async def _remove(self, record: HeldImage, reason: str) -> None:
        self.cancel_job(record.sha512)
        await self.storage.remove(record.sha512)
        self.fetcher.drop_sha512(record.sha512)
        if reason in ("space", "operator"):  # still listed: remembered, so it is not fetched again at once
            await self.state.put(record.changed(state="evicted", reason=reason, location="", size=0))
        else:
            await self.state.forget(record.sha512)
        self.metrics.evictions.labels(reason).inc()
        event(log, "node.evicted", image=record.identifier, reason=reason)

    async def gc(self, listed: Listings) -> EvictionPlan:
        """Evict revoked and expired images, then least recently used ones above the watermark."""
        async with self.lock:
            refs = await self.check_references()
            counts: dict[str, int] = {}
            for ref in refs:
                counts[ref.sha512] = counts.get(ref.sha512, 0) + 1
            records = [r for r in await self.state.images() if r.state == "staged"]
            listings = by_sha512(listed)
            entries = [evict.CacheEntry(r.sha512, r.identifier, r.size, r.last_used, r.sha512 in listings,
                                        r.sha512 in listings and all(e.expired for e in listings[r.sha512]),
                                        counts.get(r.sha512, 0))
                       for r in records]
            capacity = await self.capacity()
            result = evict.plan(entries, capacity, self.high_watermark, self.low_watermark)
            by_sha = {r.sha512: r for r in records}
            for eviction in result.evictions:
                await self._remove(by_sha[eviction.sha512], eviction.reason)
            if result.over_watermark:
                event(log, "node.over_watermark", level=logging.WARNING, used=result.used_after, capacity=capacity)
            self.metrics.cache_bytes.set(result.used_after)
            self.metrics.cache_capacity.set(capacity)
            self.metrics.references.set(len(counts))
            return result

    # --- references ---------------------------------------------------------------------------------

    async def add_reference(self, wanted: str, holder: str, disk: str, listed: Listings) -> HeldImage:
        async with self.lock:
            record = await self.held(wanted, listed)
            if record is None or record.state != "staged":
                raise UnknownImage(f"image {wanted!r} is not staged on this node")
            await self.state.add_ref(record.sha512, holder, disk)
            await self.state.touch(record.sha512)
            return record

    async def drop_reference(self, holder: str) -> bool:
        return await self.state.drop_ref(holder)

    async def check_references(self) -> list[Reference]:
        """References, cross-checked against the real disks (see the module's docstring)."""
        kept = []
        records = {r.sha512: r for r in await self.state.images()}
        for ref in await self.state.refs():
            record = records.get(ref.sha512)
            if ref.disk:
                base = record.base() if record is not None else Base(ref.sha512, "", "", 0)
                check = await self.storage.check_disk(ref.disk, base)
                if check is DiskCheck.GONE:
                    await self.state.drop_ref(ref.holder)
                    event(log, "node.reference_stale", holder=ref.holder, disk=ref.disk)
                    continue
                if check is DiskCheck.OTHER_BASE:
                    event(log, "node.reference_mismatch", level=logging.WARNING, holder=ref.holder, disk=ref.disk,
                          base=base.location)
            kept.append(ref)
        return kept

    def images_of(self, listed: Listings, records: list[HeldImage]) -> list[Image]:
        """The listed images of staged records (what the node seeds)."""
        listings = by_sha512(listed)
        return [listings[r.sha512][0].image for r in records if r.state == "staged" and r.sha512 in listings]

    async def relabel(self, listed: Listings) -> None:
        """A record whose own listing is gone while another listing names its bytes takes
        that listing's name (one publisher revoking its copy leaves the other's intact)."""
        listings = by_sha512(listed)
        for record in await self.state.images():
            names = listings.get(record.sha512, [])
            if names and all(e.key != (record.catalogue, record.identifier) for e in names):
                await self.state.put(as_listed(record, names[0]))
                event(log, "node.relabelled", image=names[0].image.identifier, was=record.identifier)
