"""One small SQL interface over SQLite (the embedded default) and PostgreSQL.

Queries are written once, in PostgreSQL's ``$1, $2`` parameter style; for SQLite the
``$n`` become ``?n`` (SQLite's numbered parameters). Rows come back as dicts.

    db = await connect("sqlite:///var/lib/vmic/catalogue.sqlite")   # or postgresql://...
    async with db.transaction() as tx:
        await tx.execute("INSERT INTO t VALUES ($1, $2)", a, b)
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, Protocol

from ..errors import ConfigError, StorageError

Row = dict[str, Any]


def to_text(value: dt.datetime | None) -> str | None:
    """How times are stored: ISO 8601 text in UTC (sorts and reads the same on both backends)."""
    return value.astimezone(dt.timezone.utc).isoformat() if value is not None else None


def from_text(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None


def required_time(value: str) -> dt.datetime:
    """A NOT NULL time column."""
    return dt.datetime.fromisoformat(value)


class UniqueViolation(Exception):
    """A write broke a UNIQUE or PRIMARY KEY constraint (both backends raise this)."""


class Queries(Protocol):
    async def execute(self, sql: str, *args: Any) -> None: ...
    async def fetch(self, sql: str, *args: Any) -> list[Row]: ...
    async def fetchone(self, sql: str, *args: Any) -> Row | None: ...


class Database(Queries, Protocol):
    def transaction(self) -> Any: ...
    async def close(self) -> None: ...


_PARAM = re.compile(r"\$(\d+)")


DISK_FULL = "the database's disk is full: {}; free space, then try again (revocation and signing need a little)"


@contextmanager
def _sqlite_disk_full() -> Iterator[None]:
    """SQLite's SQLITE_FULL ("database or disk is full") as the 507 every disk-full path answers."""
    import sqlite3

    try:
        yield
    except sqlite3.OperationalError as exc:
        if "full" in str(exc):
            raise StorageError(DISK_FULL.format(exc)) from None
        raise


class _SqliteQueries:
    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def execute(self, sql: str, *args: Any) -> None:
        import sqlite3

        try:
            with _sqlite_disk_full():
                await self._conn.execute(_PARAM.sub(r"?\1", sql), args)
        except sqlite3.IntegrityError as exc:
            raise UniqueViolation(str(exc)) from None

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        async with self._conn.execute(_PARAM.sub(r"?\1", sql), args) as cursor:
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in await cursor.fetchall()]

    async def fetchone(self, sql: str, *args: Any) -> Row | None:
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None


class SqliteDatabase:
    """One connection in autocommit mode; transactions take a lock (one writer)."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self._lock = asyncio.Lock()
        self._queries = _SqliteQueries(conn)

    async def execute(self, sql: str, *args: Any) -> None:
        async with self._lock:
            await self._queries.execute(sql, *args)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        async with self._lock:
            return await self._queries.fetch(sql, *args)

    async def fetchone(self, sql: str, *args: Any) -> Row | None:
        async with self._lock:
            return await self._queries.fetchone(sql, *args)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Queries]:
        async with self._lock:
            with _sqlite_disk_full():
                await self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._queries
            except BaseException:
                await self._rollback()
                raise
            try:
                with _sqlite_disk_full():
                    await self._conn.execute("COMMIT")
            except StorageError:
                await self._rollback()
                raise

    async def _rollback(self) -> None:
        """Undo the transaction, unless SQLite already did (it does on a full disk)."""
        if self._conn.in_transaction:
            await self._conn.execute("ROLLBACK")

    async def close(self) -> None:
        await self._conn.close()


class _PgQueries:
    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def execute(self, sql: str, *args: Any) -> None:
        import asyncpg

        try:
            await self._conn.execute(sql, *args)
        except asyncpg.UniqueViolationError as exc:
            raise UniqueViolation(str(exc)) from None
        except asyncpg.DiskFullError as exc:
            raise StorageError(DISK_FULL.format(exc)) from None

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return [dict(r) for r in await self._conn.fetch(sql, *args)]

    async def fetchone(self, sql: str, *args: Any) -> Row | None:
        row = await self._conn.fetchrow(sql, *args)
        return dict(row) if row is not None else None


class PostgresDatabase:
    """An asyncpg pool; every statement and transaction takes a pooled connection."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    async def execute(self, sql: str, *args: Any) -> None:
        async with self._pool.acquire() as conn:
            await _PgQueries(conn).execute(sql, *args)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        async with self._pool.acquire() as conn:
            return await _PgQueries(conn).fetch(sql, *args)

    async def fetchone(self, sql: str, *args: Any) -> Row | None:
        async with self._pool.acquire() as conn:
            return await _PgQueries(conn).fetchone(sql, *args)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Queries]:
        async with self._pool.acquire() as conn:
            async with conn.transaction():
                yield _PgQueries(conn)

    async def close(self) -> None:
        await self._pool.close()


async def apply_schema(db: Database, statements: list[str]) -> None:
    """Create what is missing (statements are ``CREATE ... IF NOT EXISTS``), in one transaction."""
    async with db.transaction() as tx:
        for statement in statements:
            await tx.execute(statement)


def redacted(text: str, url: str | None = None) -> str:
    """``text`` with the password of a database URL (``url``, or ``text`` itself) hidden."""
    parsed = urllib.parse.urlsplit(url or text)
    if not parsed.password:
        return text
    return text.replace(f":{parsed.password}@", ":***@").replace(parsed.password, "***")


def read_password(path: Path | None) -> str | None:
    """The database password from its own file (first line; a systemd credential, say)."""
    if path is None:
        return None
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"database_password_file {path}: cannot be read ({getattr(exc, 'strerror', exc)})") from None
    if not lines or not lines[0]:
        raise ConfigError(f"database_password_file {path} is empty")
    return lines[0]


async def connect(url: str, password_file: Path | None = None) -> Database:
    """``sqlite:///path``, a plain file path, or ``postgresql://user@host/db`` (the
    password from ``password_file``, else what libpq's PGPASSWORD / ~/.pgpass give)."""
    if url.startswith(("postgresql://", "postgres://")):
        import asyncpg

        password = read_password(password_file)
        try:
            pool = await asyncpg.create_pool(url, min_size=1, max_size=8, password=password)
        except (OSError, asyncpg.PostgresError) as exc:
            message = redacted(str(exc), url)
            if password:
                message = message.replace(password, "***")
            raise ConfigError(f"cannot connect to database {redacted(url)}: {message}") from None
        return PostgresDatabase(pool)
    import aiosqlite

    path = Path(url.removeprefix("sqlite://"))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = await aiosqlite.connect(path, isolation_level=None)
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute("PRAGMA synchronous=FULL")
    except (OSError, aiosqlite.Error) as exc:
        raise ConfigError(f"cannot open database {path}: {exc}") from None
    return SqliteDatabase(conn)
