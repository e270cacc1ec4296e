"""The node daemons a catalogue has heard of: each follows the signed list with the
User-Agent ``vmic-node/<name>``, so the catalogue learns every node's name the first time
it looks, long before the node caches anything. A preheat that names nodes is checked
against these names (a typo must not wait silently for a node that does not exist).

Names are noted in memory at each look (no database write per request) and written every
``flush`` (at most once a minute per name), so that a restart, or another catalogue
instance on the same PostgreSQL database, knows them too. Names unheard of for
``memory`` are forgotten. The names are what nodes claim, unauthenticated: a guard
against mistakes, not an access control (the signed list is that).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable, Iterable

from .db import Database, apply_schema, required_time, to_text

log = logging.getLogger("vmic.catalogue.nodes")

SCHEMA = ["""CREATE TABLE IF NOT EXISTS nodes (
    name TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    last_seen TEXT NOT NULL
)"""]
MAX_PENDING = 100_000  #: names noted between two writes, at most (a flood of made-up names stops here)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class NodeRegistry:
    def __init__(self, db: Database, memory: dt.timedelta = dt.timedelta(days=30),
                 clock: Callable[[], dt.datetime] = utcnow) -> None:
        self.db = db
        self.memory = memory
        self.clock = clock
        self._pending: dict[str, tuple[str, dt.datetime]] = {}  #: name -> (address, when), not written yet
        self._written: dict[str, dt.datetime] = {}  #: name -> when last written

    async def init(self) -> None:
        await apply_schema(self.db, SCHEMA)

    def seen(self, name: str, address: str) -> None:
        """A node looked at the list (called per request: memory only)."""
        now = self.clock()
        last = self._written.get(name)
        if last is not None and now - last < dt.timedelta(minutes=1):
            return
        if name in self._pending or len(self._pending) < MAX_PENDING:
            self._pending[name] = (address, now)

    async def flush(self) -> None:
        pending = dict(self._pending)
        async with self.db.transaction() as tx:
            for name, (address, when) in pending.items():
                await tx.execute("INSERT INTO nodes (name, address, last_seen) VALUES ($1, $2, $3)"
                                 " ON CONFLICT (name) DO UPDATE SET address = $2, last_seen = $3",
                                 name, address, to_text(when))
            await tx.execute("DELETE FROM nodes WHERE last_seen < $1", to_text(self.clock() - self.memory))
        recent = self.clock() - dt.timedelta(minutes=1)  # only what spares a write is remembered here
        self._written = {name: when for name, when in self._written.items() if when > recent}
        self._written.update({name: when for name, (_, when) in pending.items()})
        for name, noted in pending.items():  # what was noted meanwhile waits for the next write
            if self._pending.get(name) == noted:
                del self._pending[name]

    async def unknown(self, names: Iterable[str]) -> list[str]:
        """Those of ``names`` no node has claimed within ``memory`` (noted or written)."""
        await self.flush()
        rows = await self.db.fetch("SELECT name, last_seen FROM nodes")
        cutoff = self.clock() - self.memory
        known = {row["name"] for row in rows if required_time(row["last_seen"]) >= cutoff}
        return [name for name in names if name not in known]

    async def run(self, every: float = 60.0) -> None:
        while True:
            await asyncio.sleep(every)
            try:
                await self.flush()
            except Exception:  # the database away for a moment: the next round writes them
                log.exception("nodes.flush_failed")
