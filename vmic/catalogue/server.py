"""Run the catalogue service until SIGINT/SIGTERM."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

from aiohttp import web

from ..lifecycle import until_stopped
from ..log import event, setup
from .config import CatalogueConfig
from .tls import server_context
from .web import make_runner
from .wiring import build

log = logging.getLogger("vmic.catalogue")


async def serve(config: CatalogueConfig, reload_config: Callable[[], CatalogueConfig] | None = None) -> None:
    """Until SIGINT/SIGTERM; SIGHUP applies the publishers (tokens, namespaces, client
    DNs) and the log level of ``reload_config()``, everything else at the next start."""
    site_parts = await build(config)
    catalogue = site_parts.catalogue
    runner = make_runner(catalogue, site_parts.syncer, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.host, config.port, ssl_context=server_context(config))
        await site.start()
        event(log, "catalogue.listening", url=config.url, host=config.host, port=config.port,
              list_version=catalogue.listing.current.image_list.version)

        def reload() -> list[str]:
            assert reload_config is not None
            new = reload_config()
            catalogue.config = dataclasses.replace(catalogue.config, publishers=new.publishers,
                                                   log_level=new.log_level)
            setup(new.log_level)
            return ["publishers", "log_level"]

        await until_stopped(log, reload if reload_config is not None else None)
        event(log, "catalogue.stopping")
    finally:
        await runner.cleanup()
        await site_parts.close()
