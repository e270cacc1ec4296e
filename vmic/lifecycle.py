"""How every daemon waits for its end: SIGINT or SIGTERM stop it (exit 0); SIGHUP asks
it to reload what it can without a restart (each daemon says what: its ``reload`` gives
back the names of what it applied). A configuration that no longer loads is logged and
the running one kept; SIGHUP never kills a daemon."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

from .errors import ConfigError
from .log import event

Reload = Callable[[], list[str]]


async def until_stopped(log: logging.Logger, reload: Reload | None = None) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    def hangup() -> None:
        if reload is None:
            event(log, "config.reload_unsupported", level=logging.WARNING, reason="restart to apply changes")
            return
        try:
            applied = reload()
        except ConfigError as exc:
            event(log, "config.reload_failed", level=logging.WARNING, reason=str(exc), kept="the running config")
            return
        event(log, "config.reloaded", applied=applied)

    loop.add_signal_handler(signal.SIGHUP, hangup)
    try:
        await stop.wait()
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
