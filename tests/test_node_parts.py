"""The node daemon's parts, each built alone with fakes of its neighbours (fakes of our
own protocols only): the job runner with a fake fetcher (real staging, real SQLite),
and the cache store with a fake storage that answers reference checks."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path
from typing import Any

import pytest
from support import write_image

from nodecache.cache import CacheStore
from nodecache.jobs import JobRunner
from nodecache.metrics import Metrics
from nodecache.planner import Listed
from nodecache.state import HeldImage, State
from nodecache.storage.base import Base, Disk, DiskCheck, Staged
from nodecache.storage.files import FileStorage
from vmic.errors import FetchFailed
from vmic.imagelist.model import Image


class FakeFetcher:
    """Hands over a file as "the published bytes", or fails as told."""

    def __init__(self, data_dir: Path, source: Path | None = None, error: Exception | None = None) -> None:
        self.data_dir = data_dir
        self.source, self.error = source, error
        self.dropped: list[str] = []

    async def fetch(self, image: Image, progress: Any, on_sha512: Any = None) -> Path:
        if self.error is not None:
            raise self.error
        assert self.source is not None
        progress(image.size)
        return self.source

    async def recheck(self, image: Image, progress: Any) -> Path | None:
        return None  # no swarm to ask

    def drop(self, image: Image) -> None:
        self.dropped.append(image.sha512)

    def drop_sha512(self, sha512: str) -> None:
        self.dropped.append(sha512)

    def drop_orphans(self, known: set[str]) -> None:
        pass


def image_of(path: Path, sha512: str | None = None) -> Image:
    data = path.read_bytes()
    return Image(identifier=str(uuid.uuid4()), uri="http://c/x", size=len(data),
                 sha512=sha512 or hashlib.sha512(data).hexdigest(), version="1", title="alice/golden")


@pytest.fixture
async def state(tmp_path: Path) -> Any:
    (tmp_path / "data").mkdir()
    state = await State.open(tmp_path / "state.db")
    yield state
    await state.close()


def runner(state: State, fetcher: FakeFetcher, tmp_path: Path, clock: list[float]) -> JobRunner:
    storage = FileStorage(tmp_path / "base", "raw", tmp_path / "vms")
    return JobRunner(state, storage, fetcher, Metrics(), lambda catalogue: 7, parallel=1, keep_published=True,
                     clock=lambda: clock[0])


async def test_a_job_stages_the_fetched_bytes(state: State, tmp_path: Path) -> None:
    source = write_image(tmp_path / "data" / "golden", 2**20)
    image = image_of(source)
    jobs = runner(state, FakeFetcher(tmp_path / "data", source), tmp_path, [100.0])
    held = await jobs.wait(jobs.start(image, "http://c"))
    assert held.state == "staged" and Path(held.location).read_bytes() == source.read_bytes()
    assert await state.get(image.sha512) == held and jobs.jobs == {}


async def test_a_failed_fetch_is_recorded_with_its_time_for_the_planner(state: State, tmp_path: Path) -> None:
    source = write_image(tmp_path / "golden", 2**20)
    image = image_of(source)
    jobs = runner(state, FakeFetcher(tmp_path / "data", error=FetchFailed("no peer, no web seed")), tmp_path, [42.0])
    with pytest.raises(FetchFailed):
        await jobs.wait(jobs.start(image, "http://c"))
    record = await state.get(image.sha512)
    assert record is not None and record.state == "failed" and "no peer" in record.reason
    assert jobs.failed_at == {image.sha512: 42.0}


async def test_bytes_not_matching_the_signed_sha512_are_refused_and_dropped(state: State, tmp_path: Path) -> None:
    source = write_image(tmp_path / "data" / "golden", 2**20)
    image = image_of(source, sha512="0" * 128)
    fetcher = FakeFetcher(tmp_path / "data", source)
    jobs = runner(state, fetcher, tmp_path, [0.0])
    with pytest.raises(Exception, match="sha512"):
        await jobs.wait(jobs.start(image, "http://c"))
    record = await state.get(image.sha512)
    assert record is not None and record.state == "refused" and fetcher.dropped == [image.sha512]
    assert list((tmp_path / "base").iterdir()) == [], "nothing staged"


class FakeStorage:
    """A storage whose disks answer reference checks from a table."""

    name = "fake"

    def __init__(self, checks: dict[str, DiskCheck]) -> None:
        self.checks = checks
        self.removed: list[str] = []

    async def check_disk(self, disk: str, base: Base) -> DiskCheck:
        return self.checks[disk]

    async def remove(self, sha512: str) -> None:
        self.removed.append(sha512)

    async def capacity(self) -> int:
        return 100

    async def staged(self) -> list[Staged]:
        return []

    async def create_disk(self, vm: str, base: Base) -> Disk:
        raise AssertionError("not used")


@pytest.mark.parametrize("check, kept, evicted", [
    (DiskCheck.OK, ["vm:a"], []),
    (DiskCheck.OTHER_BASE, ["vm:a"], []),  # never evict on doubt
    (DiskCheck.GONE, [], ["revoked"]),  # a stale reference no longer holds the base
])
async def test_references_are_checked_against_the_disks_before_eviction(
        state: State, tmp_path: Path, check: DiskCheck, kept: list[str], evicted: list[str]) -> None:
    sha = "a" * 128
    await state.put(HeldImage(sha, "id-a", "alice/a", "1", "http://c", "staged", "", "/base/a.raw", "raw", 10, 1.0,
                              1.0))
    await state.add_ref(sha, "vm:a", "/vms/a.qcow2")
    storage = FakeStorage({"/vms/a.qcow2": check})
    cache = CacheStore(state, storage, FakeFetcher(tmp_path), Metrics(), lambda sha512: None, capacity=0,
                       high_watermark=0.9, low_watermark=0.8)
    listed: dict[str, Listed] = {}  # the image is no longer listed: revoked unless a VM holds it
    plan = await cache.gc(listed)
    assert [r.holder for r in await state.refs()] == kept
    assert [e.reason for e in plan.evictions] == evicted
    assert storage.removed == ([sha] if evicted else [])
