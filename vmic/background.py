"""Background tasks that live as long as an aiohttp application (its cleanup context):
started with the app, cancelled and awaited when it stops. Shared by the catalogue and
the tracker.

    app.cleanup_ctx.append(background_tasks(listing.run, syncer.run))
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web


def background_tasks(*runs: Callable[[], Awaitable[None]]) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        tasks = [asyncio.ensure_future(run()) for run in runs]
        yield
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return context
