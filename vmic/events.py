"""Following a catalogue's ``/events`` stream (Server-Sent Events), for every follower:
partner catalogues, trackers, seeders, node daemons."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import aiohttp


def events_url(list_url: str) -> str | None:
    """Where a vmic catalogue announces new lists (``.../imagelist`` -> ``.../events``)."""
    return list_url[: -len("imagelist")] + "events" if list_url.endswith("/imagelist") else None


async def watch_events(session: aiohttp.ClientSession, url: str, on_new_list: Callable[[], Awaitable[None]],
                       retry: float = 5.0, absent_retry: float = 600.0) -> None:
    """Call ``on_new_list`` at every event of the stream at ``url``, the first one after each
    (re)connection included: the list may have changed while the follower was away, and
    looking again is a cheap conditional fetch. Reconnects after ``retry`` seconds; a
    server without such a stream is asked again after ``absent_retry``. Runs until cancelled."""
    while True:
        delay = retry
        try:
            async with session.get(url, timeout=aiohttp.ClientTimeout(sock_read=120)) as response:
                if response.status != 200 or response.content_type != "text/event-stream":
                    delay = absent_retry
                else:
                    async for line in response.content:
                        if line.startswith(b"data:"):
                            await on_new_list()
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
            pass
        await asyncio.sleep(delay)
