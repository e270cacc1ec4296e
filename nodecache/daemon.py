"""The node cache daemon: follow, fetch, verify, stage, seed, evict.

    cache = NodeCache(config)
    await cache.start()          # sweep leftovers, reconcile the database with disk/LVM, seed what is held
    await cache.run()            # follow every catalogue until cancelled
    await cache.ensure("golden") # stage now if missing (what the provisioning shim calls)

Every list is verified (:class:`vmic.follow.ListFollower`; a refused list leaves the
last good one in force, with its reason in ``status()``, the log and a metric). The
selected images (:mod:`.select`) are fetched and staged by *jobs*, at most
``parallel`` at a time; a job's bytes are never visible as a base until staging has
checked them against the signed sha512 and published them atomically. An image
refused for its bytes is not fetched again until a list names other bytes for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from vmic.errors import MalformedTorrent
from vmic.follow import ListFollower
from vmic.imagelist.model import EXT_EXPIRES, Image, ImageList, parse_date
from vmic.log import event
from vmic.preheat import EXTENSION as PREHEAT
from vmic.preheat import USER_AGENT_PREFIX, targets

from . import evict, qemu
from .config import NodeConfig
from .errors import FetchFailed, ImageRefused, InUse, NodeCacheError, UnknownImage
from .fetch.http import fetch_http
from .fetch.swarm import Swarm
from .metrics import Metrics
from .private import TRAVERSE, private_dir
from .provision.provisioner import Provisioner
from .select import resolve, select
from .stage.base import Backend, Staged, metadata_for
from .stage.files import FileBackend
from .stage.lvm import LvmBackend
from .state import HeldImage, State

log = logging.getLogger("nodecache")
HOUSEKEEPING_SECONDS = 60.0


@dataclass
class Job:
    image: Image
    catalogue: str
    task: asyncio.Task[HeldImage] | None = None
    phase: str = "waiting"  #: waiting, fetching, staging
    done: int = 0  #: bytes of the published image fetched or staged so far
    started: float = field(default_factory=time.monotonic)

    def to_json(self) -> dict[str, Any]:
        return {"identifier": self.image.identifier, "sha512": self.image.sha512, "title": self.image.title,
                "version": self.image.version, "phase": self.phase, "done": self.done, "total": self.image.size}


@dataclass(frozen=True)
class Listed:
    image: Image
    catalogue: str
    expired: bool


class NodeCache:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.metrics = Metrics()
        root = config.cache_dir
        self.data_dir, self.torrent_dir = root / "data", root / "torrents"
        self.backend: Backend = (FileBackend(root / "base", config.format) if config.backend == "file"
                                 else LvmBackend(config.volume_group, root / "scratch"))
        self.swarm = Swarm(self.data_dir, self.torrent_dir, config.listen, config.upload_limit,
                           config.download_limit, config.web_seed, USER_AGENT_PREFIX + config.node_name)
        self.followers = {source.url: ListFollower(source, log) for source in config.catalogues}
        for follower in self.followers.values():
            follower.on_refused = lambda exc: self.metrics.verification_failures.labels("list", exc.code).inc()
        self.jobs: dict[str, Job] = {}  #: by sha512
        self._failed_at: dict[str, float] = {}
        self._first_seen: dict[str, float] = {}
        self._slots = asyncio.Semaphore(config.parallel)
        self._state: State | None = None
        self._http: aiohttp.ClientSession | None = None
        self._planning = asyncio.Lock()
        #: eviction and new references never interleave (a base is not evicted while a VM takes it)
        self._evicting = asyncio.Lock()
        self.provisioner = Provisioner(self)

    @property
    def state(self) -> State:
        assert self._state is not None, "start() first"
        return self._state

    # --- life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        private_dir(self.config.cache_dir, TRAVERSE)
        self._state = await State.open(self.config.cache_dir / "state.db")
        for url, follower in self.followers.items():
            follower.current = await self.state.last_list(url)
            follower.known = await self.state.known_images(url)
        swept = await self.backend.sweep()
        if swept:
            event(log, "node.swept", leftovers=swept)
        await self.reconcile()
        await self.swarm.start()
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(sock_connect=10, sock_read=60))
        await self._seed_held()

    async def close(self) -> None:
        for job in list(self.jobs.values()):
            if job.task is not None:
                job.task.cancel()
        await asyncio.gather(*(j.task for j in self.jobs.values() if j.task is not None), return_exceptions=True)
        await self.swarm.close()
        if self._http is not None:
            await self._http.close()
        if self._state is not None:
            await self._state.close()

    async def run(self) -> None:
        """Follow every catalogue, and keep house, until cancelled."""
        assert self._http is not None
        http = self._http
        tasks = [asyncio.create_task(self._housekeeping())]
        for url, follower in self.followers.items():
            async def on_list(image_list: ImageList, url: str = url) -> None:
                await self._accepted(url, image_list)
            tasks.append(asyncio.create_task(follower.follow(http, on_list, self.config.poll_seconds)))
        try:
            await self.plan()  # the last good lists, while the catalogues are asked
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def refresh(self) -> None:
        """Look at every catalogue's list now (what ``nodecache refresh`` asks)."""
        assert self._http is not None
        accepted = False
        for url, follower in self.followers.items():
            image_list = await follower.fetch(self._http)
            if image_list is not None:
                await self._accepted(url, image_list)
                accepted = True
        if not accepted:
            await self.plan()

    async def _accepted(self, url: str, image_list: ImageList) -> None:
        await self.state.save_list(url, image_list)
        self.metrics.list_version.labels(url).set(image_list.version)
        event(log, "node.list_accepted", catalogue=url, version=image_list.version, images=len(image_list.images))
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

    # --- what the lists say -------------------------------------------------------------------

    def listed(self) -> dict[str, Listed]:
        """Every image of every list in force, by sha512."""
        now = dt.datetime.now(dt.timezone.utc)
        result: dict[str, Listed] = {}
        for url, follower in self.followers.items():
            image_list = follower.current
            if image_list is None:
                continue
            for image in image_list.images:
                expires = image.extra.get(EXT_EXPIRES)
                own = parse_date(expires, "dc:date:expires") <= now if expires else False
                result[image.sha512] = Listed(image, url, image_list.expires <= now or own)
        return result

    async def plan(self) -> None:
        """Start jobs for selected images not held; then evict what should go."""
        async with self._planning:
            listed = self.listed()
            current = [entry.image for entry in listed.values() if not entry.expired]
            held = {image.sha512: image for image in await self.state.images()}
            preheated = [i for i in current if targets(i.extra.get(PREHEAT), self.config.node_name, i.identifier)]
            chosen = {i.sha512: i for i in select(current, self.config.select)}
            chosen.update({i.sha512: i for i in preheated})  # a preheat overrides the selection policy
            for image in chosen.values():
                record = held.get(image.sha512)
                if record is not None and record.state in ("staged", "refused", "evicted"):
                    continue  # "evicted": for space or by an operator; only ensure brings it back
                retry = self.config.retry_seconds
                if time.monotonic() - self._failed_at.get(image.sha512, -retry) < retry:
                    continue
                if self._torrent_coming(image, listed[image.sha512].catalogue):
                    continue
                self._job(image, listed[image.sha512].catalogue)
            await self.gc()
            self._count_images(await self.state.images())

    def _torrent_coming(self, image: Image, catalogue: str) -> bool:
        """Whether to wait for the image's torrent rather than fetch it by plain HTTP: its
        catalogue makes torrents (the list says so) and it was first seen less than
        ``torrent_wait`` seconds ago. Hundreds of nodes fetching a new image from the
        catalogue at once is what the swarm is there to avoid; the list that names the
        torrent follows within seconds."""
        if "vmic:btih" in image.extra:
            return False
        current = self.followers[catalogue].current
        if current is None or current.extra.get("vmic:torrents") is not True:
            return False
        first = self._first_seen.setdefault(image.sha512, time.monotonic())
        return time.monotonic() - first < self.config.torrent_wait

    # --- jobs: fetch and stage -------------------------------------------------------------------

    def _job(self, image: Image, catalogue: str) -> Job:
        job = self.jobs.get(image.sha512)
        if job is None:
            job = self.jobs[image.sha512] = Job(image, catalogue)
            job.task = asyncio.create_task(self._acquire(job))
            job.task.add_done_callback(lambda task, sha=image.sha512: self._job_done(sha, task))
        return job

    def _job_done(self, sha512: str, task: asyncio.Task[HeldImage]) -> None:
        self.jobs.pop(sha512, None)
        if not task.cancelled():
            task.exception()  # logged and recorded by _acquire; whoever awaits it sees it too

    async def _acquire(self, job: Job) -> HeldImage:
        image = job.image
        record = HeldImage(image.sha512, image.identifier, image.title, image.version, job.catalogue, "fetching",
                           "", "", "", 0, None, time.time())
        await self.state.put(record)
        try:
            async with self._slots:
                job.phase = "fetching"
                source = await self._fetch(job)
                job.phase, job.done = "staging", 0
                try:
                    staged = await self._stage(job, source)
                except ImageRefused:
                    if "vmic:btih" not in image.extra:
                        raise
                    # complete by the piece hashes but not by the sha512: before blaming the
                    # publisher, make sure the bytes on disk are what the swarm delivered
                    job.phase = "rechecking"
                    assert self._http is not None
                    torrent = await self.swarm.torrent_for(self._http, image)
                    source = await self.swarm.recheck(image, torrent, lambda n: setattr(job, "done", n), self._http)
                    job.phase, job.done = "staging", 0
                    staged = await self._stage(job, source)
        except asyncio.CancelledError:
            raise
        except ImageRefused as exc:
            await self._refused(job, exc)
            raise
        except NodeCacheError as exc:
            self._failed_at[image.sha512] = time.monotonic()
            await self.state.put(record.__class__(**{**record.__dict__, "state": "failed", "reason": str(exc)}))
            self.metrics.staged.labels("failed").inc()
            event(log, "node.stage_failed", level=logging.ERROR, image=image.identifier, reason=str(exc))
            raise
        held = HeldImage(image.sha512, image.identifier, image.title, image.version, job.catalogue, "staged", "",
                         staged.location, staged.format, self._size(staged), time.time(), time.time())
        await self.state.put(held)
        self._failed_at.pop(image.sha512, None)
        seconds = time.monotonic() - job.started
        self.metrics.staged.labels("staged").inc()
        self.metrics.stage_seconds.observe(seconds)
        event(log, "node.staged", image=image.identifier, title=image.title, version=image.version,
              location=staged.location, format=staged.format, seconds=round(seconds, 3))
        return held

    async def _fetch(self, job: Job) -> Path:
        assert self._http is not None
        image = job.image

        def progress(done: int) -> None:
            job.done = done

        if "vmic:btih" in image.extra:
            torrent = await self.swarm.torrent_for(self._http, image)
            return await self.swarm.fetch(image, torrent, progress, self._http)
        before = 0

        def counted(done: int) -> None:
            nonlocal before
            self.metrics.http_bytes.inc(max(0, done - before))
            before = done
            job.done = done

        return await fetch_http(self._http, image, self.data_dir, counted)

    async def _stage(self, job: Job, source: Path) -> Staged:
        image = job.image
        listed = self.followers[job.catalogue].current
        metadata = metadata_for(image, self.backend.target_format(image), job.catalogue,
                                listed.version if listed else 0)
        event(log, "node.staging", image=image.identifier, source=str(source))

        def progress(done: int) -> None:
            job.done = done

        staged = await self.backend.stage(source, image, metadata, progress)
        if not self.config.seed:
            self._drop_published_bytes(image)
        return staged

    async def _refused(self, job: Job, exc: ImageRefused) -> None:
        """Bytes that do not match the signed list: never staged; the bytes are dropped so a
        new attempt (when a list names other bytes) starts clean."""
        image = job.image
        self._drop_published_bytes(image)
        await self.state.put(HeldImage(image.sha512, image.identifier, image.title, image.version, job.catalogue,
                                       "refused", str(exc), "", "", 0, None, time.time()))
        self.metrics.staged.labels("refused").inc()
        self.metrics.verification_failures.labels("image", exc.code).inc()
        event(log, "node.image_refused", level=logging.ERROR, image=image.identifier, reason=str(exc))

    def _drop_published_bytes(self, image: Image) -> None:
        if "vmic:btih" in image.extra:
            self.swarm.drop(str(image.extra["vmic:btih"]), delete=True)
        for path in (self.data_dir / image.sha512, self.data_dir / f"{image.sha512}.part"):
            path.unlink(missing_ok=True)

    def _size(self, staged: Staged) -> int:
        """Bytes the cache holds for an image: its base, plus the seed copy if it is another file."""
        size = staged.allocated
        data = self.data_dir / staged.sha512
        with contextlib.suppress(FileNotFoundError):
            stat = data.stat()
            if not os.path.exists(staged.location) or not os.path.samefile(data, staged.location):
                size += stat.st_blocks * 512
        return size

    # --- start-up: the disk is the truth ------------------------------------------------------

    async def reconcile(self) -> None:
        """Make the database agree with what is really staged on disk or in LVM."""
        on_disk = {s.sha512: s for s in await self.backend.staged()}
        records = {r.sha512: r for r in await self.state.images()}
        for sha512, record in records.items():
            if record.state == "staged" and sha512 not in on_disk:
                await self.state.forget(sha512)
                event(log, "node.reconcile_vanished", level=logging.WARNING, image=record.identifier)
            elif record.state == "staged" and on_disk[sha512].location != record.location:
                # the cache directory moved: the base is the same, its path is new
                await self.state.put(HeldImage(**{**record.__dict__, "location": on_disk[sha512].location}))
                event(log, "node.reconcile_moved", image=record.identifier, location=on_disk[sha512].location)
            elif record.state == "fetching" and sha512 not in on_disk:
                await self.state.put(HeldImage(**{**record.__dict__, "state": "failed",
                                                  "reason": "interrupted (the daemon stopped); resumes"}))
        for sha512, staged in on_disk.items():
            record = records.get(sha512)
            if record is None or record.state != "staged":
                meta = staged.metadata
                await self.state.put(HeldImage(sha512, meta.get("identifier", ""), record.title if record else "",
                                               meta.get("version", ""), meta.get("catalogue", ""), "staged", "",
                                               staged.location, staged.format, self._size(staged),
                                               float(meta.get("staged", time.time())), time.time()))
                event(log, "node.reconcile_adopted", image=meta.get("identifier"), location=staged.location)
        known = set(on_disk) | set(records)
        if self.data_dir.is_dir():
            for path in self.data_dir.iterdir():
                if path.name.split(".")[0] not in known:
                    path.unlink()
                    event(log, "node.reconcile_orphan", path=str(path))

    async def _seed_held(self) -> None:
        if not self.config.seed:
            return
        assert self._http is not None
        listed = self.listed()
        for record in await self.state.images():
            entry = listed.get(record.sha512)
            if record.state != "staged" or entry is None or "vmic:btih" not in entry.image.extra:
                continue
            if (self.data_dir / record.sha512).is_file():
                with contextlib.suppress(FetchFailed):
                    self.swarm.seed(entry.image, await self.swarm.torrent_for(self._http, entry.image))

    # --- operations (the local API) -----------------------------------------------------------

    async def ensure(self, wanted: str, progress: Callable[[dict[str, Any]], None] | None = None) -> HeldImage:
        """The staged base of an image (identifier, or name/title for its newest version),
        fetching and staging it now if needed (``progress`` gets the job's state twice a second)."""
        record = await self.held(wanted)
        if record is not None and record.state == "staged":
            await self.state.touch(record.sha512)
            return record
        return await self.wait(self.job_for(wanted), progress)

    @staticmethod
    async def wait(job: Job, progress: Callable[[dict[str, Any]], None] | None = None) -> HeldImage:
        """The job's result; a caller that stops waiting does not cancel the job."""
        assert job.task is not None
        while not job.task.done():
            await asyncio.wait([job.task], timeout=0.5)
            if progress is not None:
                progress(job.to_json())
        return job.task.result()

    def job_for(self, wanted: str) -> Job:
        """The job that stages ``wanted`` (started now if there is none)."""
        listed = self.listed()
        image = resolve((e.image for e in listed.values() if not e.expired), wanted)
        if image is None:
            raise UnknownImage(f"no followed list names an image {wanted!r}")
        return self._job(image, listed[image.sha512].catalogue)

    async def held(self, wanted: str) -> HeldImage | None:
        records = await self.state.images()
        for record in records:
            if wanted in (record.sha512, record.identifier):
                return record
        listed = self.listed()
        image = resolve((e.image for e in listed.values() if not e.expired), wanted)
        return next((r for r in records if image is not None and r.sha512 == image.sha512), None)

    async def evict(self, wanted: str, reason: str = "operator") -> HeldImage:
        async with self._evicting:
            record = await self.held(wanted)
            if record is None:
                raise UnknownImage(f"the cache holds no image {wanted!r}")
            refs = [r.holder for r in await self.state.refs() if r.sha512 == record.sha512]
            if refs:
                raise InUse(f"image {record.identifier} is in use by {', '.join(refs)}")
            await self._remove(record, reason)
            return record

    async def _remove(self, record: HeldImage, reason: str) -> None:
        job = self.jobs.get(record.sha512)
        if job is not None and job.task is not None:
            job.task.cancel()
        await self.backend.remove(record.sha512)
        for path in self.torrent_dir.glob("*.torrent"):  # the torrent of these bytes, if any
            if path.is_file() and self._torrent_names(path) == record.sha512:
                self.swarm.drop(path.stem, delete=True)
        for path in (self.data_dir / record.sha512, self.data_dir / f"{record.sha512}.part"):
            path.unlink(missing_ok=True)
        if reason in ("space", "operator"):  # still listed: remembered, so it is not fetched again at once
            await self.state.put(HeldImage(**{**record.__dict__, "state": "evicted", "reason": reason,
                                              "location": "", "size": 0}))
        else:
            await self.state.forget(record.sha512)
        self.metrics.evictions.labels(reason).inc()
        event(log, "node.evicted", image=record.identifier, reason=reason)

    @staticmethod
    def _torrent_names(path: Path) -> str:
        from vmic.torrents import Torrent

        try:
            return str(Torrent.parse(path.read_bytes()).info.name())
        except MalformedTorrent:
            return ""

    async def gc(self) -> evict.Plan:
        """Evict revoked and expired images, then least recently used ones above the watermark."""
        async with self._evicting:
            return await self._gc()

    async def _gc(self) -> evict.Plan:
        listed = self.listed()
        refs = await self.check_references()
        counts: dict[str, int] = {}
        for ref in refs:
            counts[ref.sha512] = counts.get(ref.sha512, 0) + 1
        records = [r for r in await self.state.images() if r.state == "staged"]
        entries = [evict.CacheEntry(r.sha512, r.identifier, r.size, r.last_used, r.sha512 in listed,
                                    r.sha512 in listed and listed[r.sha512].expired, counts.get(r.sha512, 0))
                   for r in records]
        capacity = self.config.capacity or await self.backend.capacity()
        result = evict.plan(entries, capacity, self.config.high_watermark, self.config.low_watermark)
        by_sha = {r.sha512: r for r in records}
        for eviction in result.evictions:
            await self._remove(by_sha[eviction.sha512], eviction.reason)
        if result.over_watermark:
            event(log, "node.over_watermark", level=logging.WARNING, used=result.used_after, capacity=capacity)
        self.metrics.cache_bytes.set(result.used_after)
        self.metrics.cache_capacity.set(capacity)
        self.metrics.references.set(len(counts))
        return result

    # --- references (kept with the provisioning shim) -------------------------------------------

    async def add_reference(self, wanted: str, holder: str, disk: str = "") -> HeldImage:
        async with self._evicting:
            record = await self.held(wanted)
            if record is None or record.state != "staged":
                raise UnknownImage(f"image {wanted!r} is not staged on this node")
            await self.state.add_ref(record.sha512, holder, disk)
            await self.state.touch(record.sha512)
            return record

    async def drop_reference(self, holder: str) -> bool:
        return await self.state.drop_ref(holder)

    async def check_references(self) -> list[Any]:
        """References, cross-checked against the real disks: a reference whose overlay no
        longer exists is dropped; one whose overlay's backing file is not its base is kept
        (never evict on doubt) and reported."""
        kept = []
        records = {r.sha512: r for r in await self.state.images()}
        for ref in await self.state.refs():
            if ref.disk and self.config.backend == "file" and not os.path.exists(ref.disk):
                await self.state.drop_ref(ref.holder)
                event(log, "node.reference_stale", holder=ref.holder, disk=ref.disk)
                continue
            if ref.disk and self.config.backend == "file" and ref.sha512 in records:
                with contextlib.suppress(NodeCacheError):
                    facts = await qemu.info(Path(ref.disk), "qcow2")
                    if facts.backing_file != records[ref.sha512].location:
                        event(log, "node.reference_mismatch", level=logging.WARNING, holder=ref.holder,
                              disk=ref.disk, backing=facts.backing_file, base=records[ref.sha512].location)
            kept.append(ref)
        return kept

    # --- status ---------------------------------------------------------------------------------

    def _count_images(self, records: list[HeldImage]) -> None:
        for state in ("staged", "fetching", "refused", "failed", "evicted"):
            self.metrics.images.labels(state).set(sum(1 for r in records if r.state == state))

    async def refresh_metrics(self) -> None:
        self._count_images(await self.state.images())
        down, up = self.swarm.totals()
        self.metrics.bytes_down.set(down)
        self.metrics.bytes_up.set(up)
        self.metrics.piece_failures.set(self.swarm.hash_failures)

    async def status(self) -> dict[str, Any]:
        records = await self.state.images()
        refs = await self.state.refs()
        catalogues = []
        for url, follower in self.followers.items():
            current = follower.current
            catalogues.append({
                "url": url,
                "version": current.version if current else None,
                "expires": current.expires.isoformat() if current else None,
                "images": len(current.images) if current else 0,
                "refused": str(follower.refused) if follower.refused else None,
                "refused_code": follower.refused.code if follower.refused else None,
                "unreachable": follower.unreachable,
            })
        capacity = self.config.capacity or await self.backend.capacity()
        return {
            "backend": self.config.backend,
            "catalogues": catalogues,
            "images": [{**r.__dict__, "references": [x.holder for x in refs if x.sha512 == r.sha512]}
                       for r in records],
            "jobs": [job.to_json() for job in self.jobs.values()],
            "cache": {"used": sum(r.size for r in records if r.state == "staged"), "capacity": capacity,
                      "high_watermark": self.config.high_watermark, "low_watermark": self.config.low_watermark},
        }


