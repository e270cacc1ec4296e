"""The catalogue's and tracker's background loops outlive their failures: a database
outage at the wrong moment once killed the subscription loop for good (and turned the
next clean SIGTERM into exit 1)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, cast

import pytest
from aiohttp import web

from vmic.background import background_tasks
from vmic.catalogue.listing import ListSigner
from vmic.sync.syncer import Syncer


class Outage(Exception):
    pass


class FailingOnce:
    """A store whose first ``calls_failing`` reads raise, as asyncpg does while the database
    is down; ``answered`` is set at the first read after that."""

    def __init__(self, calls_failing: int, answer: Any) -> None:
        self.calls = 0
        self.calls_failing = calls_failing
        self.answer = answer
        self.answered = asyncio.Event()

    async def read(self) -> Any:
        self.calls += 1
        if self.calls <= self.calls_failing:
            raise Outage("connection was closed in the middle of operation")
        self.answered.set()
        return self.answer


async def test_a_run_that_raises_is_logged_and_started_again_and_cleanup_is_clean(
        caplog: pytest.LogCaptureFixture) -> None:
    runs = 0
    third = asyncio.Event()

    async def crashes_twice() -> None:
        nonlocal runs
        runs += 1
        if runs <= 2:
            raise Outage(f"round {runs}")
        third.set()
        await asyncio.Event().wait()  # a loop that runs until cancelled

    async def finishes() -> None:
        return None

    context = background_tasks(crashes_twice, finishes, restart_after=0.0)(web.Application())
    await context.__anext__()
    await asyncio.wait_for(third.wait(), 30)
    with pytest.raises(StopAsyncIteration):  # stopping the app: nothing raised out of the cleanup
        await context.__anext__()
    assert runs == 3
    crashed = [r for r in caplog.records if r.getMessage() == "background.crashed"]
    assert len(crashed) == 2 and all(r.levelno == logging.ERROR for r in crashed)


async def survives(loop: Coroutine[Any, Any, None], store: FailingOnce) -> None:
    """Run ``loop`` until ``store`` answers after its failures; the loop must still be running."""
    task = asyncio.create_task(loop)
    try:
        await asyncio.wait_for(store.answered.wait(), 30)
        assert not task.done()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_the_subscription_loop_survives_a_database_outage() -> None:
    records = FailingOnce(calls_failing=3, answer=[])
    stub = type("Records", (), {"schedule": lambda self: records.read()})()
    syncer = Syncer(cast(Any, None), cast(Any, stub), cast(Any, None), cast(Any, None))
    await survives(syncer.run(tick=0.0), records)


async def test_the_list_refresher_survives_a_database_outage() -> None:
    """Were this loop to die, the signed list would expire under a catalogue that still serves."""
    images = FailingOnce(calls_failing=3, answer=[])
    stub = type("Store", (), {"images": lambda self: images.read()})()
    listing = ListSigner(cast(Any, stub), cast(Any, None), cast(Any, None))
    await survives(listing.run(retry=0.0), images)
