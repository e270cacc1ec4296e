"""libtorrent alerts on the asyncio event loop.

libtorrent writes a byte to a pipe (``set_alert_fd``) whenever alerts are waiting; the
event loop watches the pipe's read end and pops the alerts then. No polling loop, and
no notify callback (which runs on libtorrent's thread and can deadlock).

An alert is valid only while its handler runs: libtorrent frees it at the next pop.
Handlers copy what they need; they never keep the alert.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

import libtorrent as lt


class AlertPump:
    """Owners drop their own reference to the session, then call :meth:`close`, which
    drops the pump's (the last one: libtorrent stops there, its destructor waits for its
    threads) and only then closes the pipe libtorrent wrote to."""

    def __init__(self, session: lt.session, handle: Callable[[lt.alert], None]) -> None:
        self.session: lt.session | None = session
        self.handle = handle
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._read, self._drain)
        session.set_alert_fd(self._write)

    def _drain(self) -> None:
        try:
            while os.read(self._read, 4096):
                pass
        except BlockingIOError:
            pass
        if self.session is None:
            return
        for alert in self.session.pop_alerts():
            self.handle(alert)

    def close(self) -> None:
        self.session = None
        self._loop.remove_reader(self._read)
        os.close(self._read)
        os.close(self._write)
