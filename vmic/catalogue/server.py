"""Run the catalogue service until SIGINT/SIGTERM."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

from aiohttp import web

from ..lifecycle import Signals
from ..listening import bind
from ..log import event, setup
from .config import CatalogueConfig
from .service import Catalogue
from .tls import server_context
from .web import make_runner
from .wiring import build

log = logging.getLogger("vmic.catalogue")


async def serve(config: CatalogueConfig, reload_config: Callable[[], CatalogueConfig] | None = None) -> None:
    """Until SIGINT/SIGTERM; SIGHUP applies the publishers (tokens, namespaces, client
    DNs) and the log level of ``reload_config()``, everything else at the next start."""
    built: list[Catalogue] = []

    def reload() -> list[str]:
        assert reload_config is not None
        new = reload_config()
        setup(new.log_level)
        if not built:  # still starting: it started with the file as it was read
            return ["log_level"]
        built[0].config = dataclasses.replace(built[0].config, publishers=new.publishers, log_level=new.log_level)
        return ["publishers", "log_level"]

    signals = Signals(log, reload if reload_config is not None else None)  # before anything listens
    ssl_context = server_context(config)
    # the port first: a start that cannot listen (taken, not allowed) stops before the
    # database is opened or a list signed, with one line and exit 1
    listening = bind(config.host, config.port)
    try:
        site_parts = await build(config)
    except BaseException:
        listening.close()
        raise
    catalogue = site_parts.catalogue
    built.append(catalogue)
    runner = make_runner(catalogue, site_parts.syncer, access_log=None)
    await runner.setup()
    try:
        site = web.SockSite(runner, listening, ssl_context=ssl_context)
        await site.start()
        event(log, "catalogue.listening", url=config.url, host=config.host, port=config.port,
              list_version=catalogue.listing.current.image_list.version)
        await signals.wait()
        event(log, "catalogue.stopping")
    finally:
        await runner.cleanup()
        await site_parts.close()
