"""Run the catalogue service until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from ..log import event
from .config import CatalogueConfig
from .tls import server_context
from .web import make_runner
from .wiring import build

log = logging.getLogger("vmic.catalogue")


async def serve(config: CatalogueConfig) -> None:
    site_parts = await build(config)
    catalogue = site_parts.catalogue
    runner = make_runner(catalogue, site_parts.syncer, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.host, config.port, ssl_context=server_context(config))
        await site.start()
        event(log, "catalogue.listening", url=config.url, host=config.host, port=config.port,
              list_version=catalogue.listing.current.image_list.version)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        event(log, "catalogue.stopping")
    finally:
        await runner.cleanup()
        await site_parts.close()
