"""Run the node daemon until SIGINT/SIGTERM: the cache, its API on a Unix socket, and
(if configured) Prometheus metrics over TCP."""

from __future__ import annotations

import asyncio
import contextlib
import grp
import logging
import os

from aiohttp import web

from vmic.json_body import runner_options
from vmic.lifecycle import Reload, Signals
from vmic.listening import bind, claim_unix_socket
from vmic.log import event
from vmic.units import parse_listen

from .api import make_app, metrics_app
from .config import NodeConfig
from .wiring import build

log = logging.getLogger("nodecache")


async def serve(config: NodeConfig, reload: Reload | None = None) -> None:
    signals = Signals(log, reload)  # before anything listens
    socket = config.socket_path
    claim_unix_socket(socket)  # first: a second daemon on this cache stops here, changing nothing
    metrics_socket = bind(*parse_listen(config.metrics_listen)) if config.metrics_listen else None
    try:
        node = await build(config)
        await node.start()
    except BaseException:
        if metrics_socket is not None:
            metrics_socket.close()
        raise
    runners: list[web.AppRunner] = []
    task: asyncio.Task[None] | None = None
    try:
        socket.parent.mkdir(parents=True, exist_ok=True)
        runner = web.AppRunner(make_app(node), access_log=None, **runner_options())
        await runner.setup()
        runners.append(runner)
        await web.UnixSite(runner, str(socket)).start()
        os.chmod(socket, 0o660)
        if config.socket_group:
            os.chown(socket, -1, grp.getgrnam(config.socket_group).gr_gid)
        if metrics_socket is not None:
            metrics = web.AppRunner(metrics_app(node), access_log=None, **runner_options())
            await metrics.setup()
            runners.append(metrics)
            await web.SockSite(metrics, metrics_socket).start()
        event(log, "node.listening", socket=str(socket), metrics=config.metrics_listen or None,
              bittorrent_port=node.swarm.port, backend=config.backend,
              catalogues=[c.url for c in config.catalogues])
        task = asyncio.create_task(node.run())
        stopped = asyncio.create_task(signals.wait())
        await asyncio.wait([task, stopped], return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if task.done():
            task.result()  # a crash of the follow loop is the daemon's crash
        event(log, "node.stopping")
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for runner in runners:
            await runner.cleanup()
        await node.close()  # saves resume data: a restart continues where this one stopped
        config.socket_path.unlink(missing_ok=True)
