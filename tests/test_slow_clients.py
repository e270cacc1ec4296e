"""Slow clients cannot hold a service's connections: a connection idle, or still sending
its headers, is closed after ``header_timeout``; a body that stalls for ``body_timeout``
ends (a JSON body is a 408; a tus upload keeps what arrived). The client here is
bounded: every wait has a deadline well above the timeouts."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web
from support import ENDORSER_DN, auth, free_port, upload_request, write_image

from distributor.tracker.server import Tracker, TrackerConfig, make_app
from vmic.catalogue_source import CatalogueSource
from vmic.json_body import runner_options

DEADLINE = 20.0  #: far above the 1 s timeouts: the test waits on the close, never on a guess


async def closed_after(host: str, port: int, drip: bytes | None = None, opening: bytes = b"") -> float:
    """Seconds until the server closes a connection that sends ``opening`` and then
    ``drip`` every 0.2 s (nothing, if None)."""
    reader, writer = await asyncio.open_connection(host, port)
    start = time.monotonic()
    writer.write(opening)
    try:
        async with asyncio.timeout(DEADLINE):
            while True:
                try:
                    data = await asyncio.wait_for(reader.read(4096), 0.2)
                except TimeoutError:
                    if drip:
                        writer.write(drip)
                    continue
                if not data:
                    return time.monotonic() - start
    except (ConnectionError, TimeoutError) as exc:
        if isinstance(exc, TimeoutError):
            raise AssertionError(f"the server kept a slow connection open for {DEADLINE} s") from None
        return time.monotonic() - start
    finally:
        writer.close()


async def test_the_catalogue_closes_idle_and_dripping_connections(catalogue_factory: Any) -> None:
    catalogue = await catalogue_factory(header_timeout=1.0)
    port = catalogue.config.port
    assert await closed_after("127.0.0.1", port) < DEADLINE
    assert await closed_after("127.0.0.1", port, drip=b"X-Slow: 1\r\n", opening=b"GET / HTTP/1.1\r\n") < DEADLINE
    many = await asyncio.gather(*(closed_after("127.0.0.1", port) for _ in range(200)))
    assert max(many) < DEADLINE, "200 idle connections, all closed"


async def test_a_stalled_body_is_a_408_or_ends_an_upload_keeping_what_arrived(catalogue_factory: Any,
                                                                              tmp_path: Any) -> None:
    catalogue = await catalogue_factory(body_timeout=1.0)
    port = catalogue.config.port
    headers = "".join(f"{k}: {v}\r\n" for k, v in auth().items())
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"POST /api/v1/uploads HTTP/1.1\r\nHost: x\r\n{headers}Content-Type: application/json\r\n"
                 "Content-Length: 1000\r\n\r\n{\"namespace\": ".encode())
    async with asyncio.timeout(DEADLINE):
        status = await reader.readline()
    assert status.startswith(b"HTTP/1.1 408"), status
    writer.close()

    image = write_image(tmp_path / "a.raw", 2**20)
    async with catalogue.client() as client:
        location = await client.start_upload(upload_request(image))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write((f"PATCH {location} HTTP/1.1\r\nHost: x\r\n{headers}Upload-Offset: 0\r\n"
                  f"Content-Type: application/offset+octet-stream\r\nContent-Length: {2**20}\r\n\r\n").encode()
                 + image.read_bytes()[:1000])
    async with asyncio.timeout(DEADLINE):
        answer = (await reader.readuntil(b"\r\n\r\n")).decode()
    assert answer.startswith("HTTP/1.1 204") and "Upload-Offset: 1000" in answer, answer
    writer.close()
    async with catalogue.client() as client:
        assert await client.upload_offset(location) == 1000, "what arrived is kept; the client resumes"


async def test_the_tracker_closes_slow_connections(catalogue: Any, keys: Any) -> None:
    port = free_port()
    tracker = Tracker.from_config(TrackerConfig(CatalogueSource(catalogue.url, keys.ca_dir, ENDORSER_DN),
                                                listen=f"127.0.0.1:{port}", header_timeout=1.0))
    runner = web.AppRunner(make_app(tracker, follow=False), **runner_options(tracker.config.header_timeout))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        assert await closed_after("127.0.0.1", port, drip=b"a", opening=b"GET /announce?info_hash=") < DEADLINE
    finally:
        await runner.cleanup()
