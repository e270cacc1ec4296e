"""Jobs: one image from its list to a staged base (fetch -> stage), at most ``parallel``
at a time.

A job's bytes are never visible as a base until staging has checked them against the
signed sha512 and published them atomically. Bytes that do not match are *refused*:
never staged, dropped, and not fetched again until a list names other bytes for the
image. Any other failure is recorded with its time, for the planner's backoff.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from vmic.imagelist.model import Image
from vmic.log import event

from .errors import FetchFailed, ImageRefused, NodeCacheError
from .metrics import Metrics
from .state import HeldImage, State
from .storage.base import Staged, Storage, held_bytes, metadata_for

log = logging.getLogger("nodecache")
Clock = Callable[[], float]


class PublishedBytes(Protocol):
    """Where a job gets an image's published bytes (:class:`vmic.fetch.fetcher.Fetcher`)."""

    data_dir: Path

    async def fetch(self, image: Image, progress: Callable[[int], None],
                    on_sha512: Callable[[str], None] | None = None) -> Path: ...

    async def recheck(self, image: Image, progress: Callable[[int], None]) -> Path | None: ...

    def drop(self, image: Image) -> None: ...


@dataclass
class Job:
    image: Image
    catalogue: str
    started: float
    task: asyncio.Task[HeldImage] | None = None
    phase: str = "waiting"  #: waiting, fetching, rechecking, staging
    done: int = 0  #: bytes of the published image fetched or staged so far

    def to_json(self) -> dict[str, Any]:
        return {"identifier": self.image.identifier, "sha512": self.image.sha512, "title": self.image.title,
                "version": self.image.version, "phase": self.phase, "done": self.done, "total": self.image.size}

    def progress(self, done: int) -> None:
        self.done = done


@dataclass
class JobRunner:
    state: State
    storage: Storage
    fetcher: PublishedBytes
    metrics: Metrics
    list_version: Callable[[str], int]  #: the version of a catalogue's list in force
    parallel: int
    keep_published: bool  #: keep the published bytes after staging (to seed them)
    clock: Clock = time.monotonic
    jobs: dict[str, Job] = field(default_factory=dict)  #: by sha512
    failed_at: dict[str, float] = field(default_factory=dict)  #: sha512 -> clock() of its last failure

    def __post_init__(self) -> None:
        self._slots = asyncio.Semaphore(self.parallel)

    def start(self, image: Image, catalogue: str) -> Job:
        """The job that stages ``image`` (started now if there is none)."""
        job = self.jobs.get(image.sha512)
        if job is None:
            job = self.jobs[image.sha512] = Job(image, catalogue, self.clock())
            job.task = asyncio.create_task(self._acquire(job))
            job.task.add_done_callback(functools.partial(self._done, image.sha512))
        return job

    def _done(self, sha512: str, task: asyncio.Task[HeldImage]) -> None:
        self.jobs.pop(sha512, None)
        if not task.cancelled():
            task.exception()  # logged and recorded by _acquire; whoever awaits it sees it too

    def cancel(self, sha512: str) -> None:
        job = self.jobs.get(sha512)
        if job is not None and job.task is not None:
            job.task.cancel()

    async def close(self) -> None:
        tasks = [job.task for job in self.jobs.values() if job.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @staticmethod
    async def wait(job: Job, progress: Callable[[dict[str, Any]], None] | None = None) -> HeldImage:
        """The job's result; a caller that stops waiting does not cancel the job."""
        assert job.task is not None
        while not job.task.done():
            await asyncio.wait([job.task], timeout=0.5)
            if progress is not None:
                progress(job.to_json())
        return job.task.result()

    def _record(self, job: Job, state: str, **fields: Any) -> HeldImage:
        image = job.image
        values: dict[str, Any] = {"reason": "", "location": "", "format": "", "size": 0, "staged": None,
                                  "last_used": time.time(), **fields}
        return HeldImage(image.sha512, image.identifier, image.title, image.version, job.catalogue, state, **values)

    async def _acquire(self, job: Job) -> HeldImage:
        image = job.image
        await self.state.put(self._record(job, "fetching"))
        try:
            async with self._slots:
                job.phase = "fetching"
                fetch_started = self.clock()
                hashed: list[str] = []  # the download's sha512, hashed while it arrived (swarm)
                source = await self.fetcher.fetch(image, job.progress, hashed.append)
                self.metrics.fetch_seconds.observe(self.clock() - fetch_started)
                if hashed and hashed[-1] != image.sha512:  # read before it was written, or bad bytes
                    event(log, "node.hash_while_arriving_differs", level=logging.WARNING, image=image.identifier,
                          then="the file is hashed again, whole")
                try:
                    staged = await self._stage(job, source, hashed[-1] if hashed else None)
                except ImageRefused:
                    job.phase = "rechecking"
                    rechecked = await self.fetcher.recheck(image, job.progress)
                    if rechecked is None:
                        raise
                    staged = await self._stage(job, rechecked)
        except asyncio.CancelledError:
            raise
        except ImageRefused as exc:
            await self._refused(job, exc)
            raise
        except (NodeCacheError, FetchFailed) as exc:
            self.failed_at[image.sha512] = self.clock()
            await self.state.put(self._record(job, "failed", reason=str(exc)))
            self.metrics.staged.labels("failed").inc()
            event(log, "node.stage_failed", level=logging.ERROR, image=image.identifier, reason=str(exc))
            raise
        now = time.time()
        held = self._record(job, "staged", location=staged.location, format=staged.format,
                            size=held_bytes(staged, self.fetcher.data_dir), staged=now, last_used=now)
        await self.state.put(held)
        self.failed_at.pop(image.sha512, None)
        seconds = self.clock() - job.started
        self.metrics.staged.labels("staged").inc()
        self.metrics.stage_seconds.observe(seconds)
        event(log, "node.staged", image=image.identifier, title=image.title, version=image.version,
              location=staged.location, format=staged.format, seconds=round(seconds, 3))
        return held

    async def _stage(self, job: Job, source: Path, known_sha512: str | None = None) -> Staged:
        image = job.image
        job.phase, job.done = "staging", 0
        metadata = metadata_for(image, self.storage.target_format(image), job.catalogue,
                                self.list_version(job.catalogue))
        event(log, "node.staging", image=image.identifier, source=str(source),
              hashed_while_downloading=known_sha512 is not None)
        staged = await self.storage.stage(source, image, metadata, job.progress, known_sha512)
        if not self.keep_published:
            self.fetcher.drop(image)
        return staged

    async def _refused(self, job: Job, exc: ImageRefused) -> None:
        """Bytes that do not match the signed list: never staged; the bytes are dropped so a
        new attempt (when a list names other bytes) starts clean."""
        self.fetcher.drop(job.image)
        await self.state.put(self._record(job, "refused", reason=str(exc)))
        self.metrics.staged.labels("refused").inc()
        self.metrics.verification_failures.labels("image", exc.code).inc()
        event(log, "node.image_refused", level=logging.ERROR, image=job.image.identifier, reason=str(exc))
