"""A minimal QMP (QEMU Machine Protocol) client over a Unix socket, in asyncio:
greeting, ``qmp_capabilities``, then one command at a time."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from .errors import HypervisorRefused


class Qmp:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, socket: Path, timeout: float = 10) -> Qmp:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(socket)), timeout)
        qmp = cls(reader, writer)
        await qmp._receive()  # the greeting
        await qmp.execute("qmp_capabilities")
        return qmp

    async def _receive(self) -> dict[str, Any]:
        while True:
            line = await asyncio.wait_for(self.reader.readline(), 30)
            if not line:
                raise HypervisorRefused("qemu closed its monitor")
            message = json.loads(line)
            if "event" not in message:  # events are not waited for here
                return dict(message)

    async def execute(self, command: str, **arguments: Any) -> Any:
        request: dict[str, Any] = {"execute": command}
        if arguments:
            request["arguments"] = arguments
        self.writer.write(json.dumps(request).encode() + b"\n")
        await self.writer.drain()
        reply = await self._receive()
        if "error" in reply:
            raise HypervisorRefused(f"qemu: {command}: {reply['error'].get('desc', reply['error'])}")
        return reply.get("return")

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, BrokenPipeError):
            pass
