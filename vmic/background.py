"""Background tasks that live as long as an aiohttp application (its cleanup context):
started with the app, cancelled and awaited when it stops. Shared by the catalogue and
the tracker.

    app.cleanup_ctx.append(background_tasks(listing.run, syncer.run))

Each run keeps going through its own failures; should one escape all the same, it is
logged and the run started again ``restart_after`` seconds later, so that one bad moment
(the database away, a bug in one round) neither stops the work for good nor turns a later
clean SIGTERM into a failed exit.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from .log import event

log = logging.getLogger("vmic.background")


async def supervised(run: Callable[[], Awaitable[None]], restart_after: float) -> None:
    """Run ``run`` until it returns or is cancelled; after an exception, log and run it again."""
    name = getattr(run, "__qualname__", repr(run))
    while True:
        try:
            await run()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("background.crashed", extra={"fields": {"task": name, "restart_after": restart_after}})
        await asyncio.sleep(restart_after)
        event(log, "background.restarted", task=name)


def background_tasks(*runs: Callable[[], Awaitable[None]],
                     restart_after: float = 5.0) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        tasks = [asyncio.ensure_future(supervised(run, restart_after)) for run in runs]
        yield
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    return context
