"""How every daemon waits for its end: SIGINT or SIGTERM stop it (exit 0); SIGHUP asks
it to reload what it can without a restart (each daemon says what: its ``reload`` gives
back the names of what it applied). A configuration that no longer loads is logged and
the running one kept; SIGHUP never kills a daemon.

The handlers are installed when :class:`Signals` is made, which a daemon does before it
listens: a signal that comes while it starts is not the default action (death), but a
stop once it is up.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

from .errors import ConfigError
from .log import event

Reload = Callable[[], list[str]]


class Signals:
    def __init__(self, log: logging.Logger, reload: Reload | None = None) -> None:
        self.log = log
        self.reload = reload
        self.stopping = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._loop.add_signal_handler(sig, self.stopping.set)
        self._loop.add_signal_handler(signal.SIGHUP, self._hangup)

    def _hangup(self) -> None:
        if self.reload is None:
            event(self.log, "config.reload_unsupported", level=logging.WARNING, reason="restart to apply changes")
            return
        try:
            applied = self.reload()
        except ConfigError as exc:
            event(self.log, "config.reload_failed", level=logging.WARNING, reason=str(exc),
                  kept="the running config")
            return
        event(self.log, "config.reloaded", applied=applied)

    async def wait(self) -> None:
        """Until SIGINT or SIGTERM (SIGHUP reloads meanwhile); then SIGHUP is ignored."""
        await self.stopping.wait()
        self._loop.add_signal_handler(signal.SIGHUP, lambda: None)
