"""A client of the node daemon's local API (its Unix socket): what ``nodecache`` and
``vmprov`` talk to the daemon with."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp

from vmic.errors import RemoteError, VmicError

from .config import load
from .paths import DEFAULT_CONFIG


class DaemonUnreachable(VmicError):
    code = "daemon_unreachable"


class Client:
    """The daemon's local API over its Unix socket."""

    def __init__(self, socket: Path) -> None:
        self.socket = socket

    def session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(self.socket)),
                                     timeout=aiohttp.ClientTimeout(total=None, sock_connect=5))

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            async with self.session() as session, session.request(method, f"http://node{path}",
                                                                   json=body) as response:
                data = await response.json(content_type=None)
                if response.status >= 400:
                    raise RemoteError(data.get("message", ""), response.status, data.get("error", "error"))
                return data
        except aiohttp.ClientConnectionError as exc:
            raise DaemonUnreachable(f"cannot reach the node daemon at {self.socket}: {exc}") from None

    async def ensure(self, image: str, on_progress: Any) -> dict[str, Any]:
        return await self.stream("/ensure", {"image": image}, on_progress)

    async def stream(self, path: str, body: dict[str, Any], on_progress: Any) -> dict[str, Any]:
        """POST ``body``; call ``on_progress`` with each NDJSON progress line; the result."""
        try:
            async with self.session() as session, session.post(f"http://node{path}", json=body) as r:
                if r.status >= 400:
                    data = await r.json(content_type=None)
                    raise RemoteError(data.get("message", ""), r.status, data.get("error", "error"))
                async for line in r.content:
                    message = json.loads(line)
                    if "result" in message:
                        return dict(message["result"])
                    if "error" in message:
                        raise RemoteError(message.get("message", ""), 500, message["error"])
                    on_progress(message)
        except aiohttp.ClientConnectionError as exc:
            raise DaemonUnreachable(f"cannot reach the node daemon at {self.socket}: {exc}") from None
        raise RemoteError("the daemon closed the connection before the operation ended", 502, "incomplete")


def client_for(config: Path | None, socket: Path | None) -> Client:
    """The daemon's client: ``--socket``, else the socket of ``-c CONFIG`` (or the default config)."""
    if socket:
        return Client(socket)
    return Client(load(config or (DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None)).socket_path)
