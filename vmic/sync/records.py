"""Subscriptions to partner catalogues, and what was seen and mirrored from each.

Same SQL on SQLite and PostgreSQL (see :mod:`vmic.catalogue.db`), in the catalogue's
database. Three tables:

- ``subscriptions``: one row per partner list, with the last *good* state (version,
  ETag, the verbatim signed list) and the last attempt's error, kept apart so that a
  failed sync never replaces the last good list;
- ``seen_images``: every image identifier (and sha512) ever accepted from a partner,
  the history that makes an identifier coming back with other bytes detectable;
- ``mirrored``: images imported into this catalogue, and since when each has been
  missing from the partner's list (for revocation after a grace period).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

from ..catalogue.db import Database, Row, apply_schema, from_text, to_text
from ..errors import Conflict, NotFound

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS subscriptions (
        name TEXT PRIMARY KEY,
        url TEXT NOT NULL,
        namespace TEXT NOT NULL UNIQUE,
        ca_pem TEXT NOT NULL,
        endorser_dn TEXT NOT NULL,
        endorser_ca TEXT,
        list_identifier TEXT,
        selectors TEXT NOT NULL,
        interval_seconds BIGINT NOT NULL,
        grace_seconds BIGINT NOT NULL,
        last_version BIGINT,
        etag TEXT,
        signed_list TEXT,
        last_success TEXT,
        last_attempt TEXT,
        last_error TEXT
    )""",
    """CREATE TABLE IF NOT EXISTS seen_images (
        subscription TEXT NOT NULL, identifier TEXT NOT NULL, sha512 TEXT NOT NULL,
        PRIMARY KEY (subscription, identifier)
    )""",
    """CREATE TABLE IF NOT EXISTS mirrored (
        subscription TEXT NOT NULL, identifier TEXT NOT NULL, missing_since TEXT,
        PRIMARY KEY (subscription, identifier)
    )""",
]



@dataclass(frozen=True)
class SubscriptionRecord:
    name: str
    url: str
    namespace: str
    ca_pem: str
    endorser_dn: str
    endorser_ca: str | None = None
    #: pinned at the first accepted list unless given
    list_identifier: str | None = None
    selectors: dict[str, str] = field(default_factory=dict)
    interval_seconds: int = 300
    grace_seconds: int = 3600
    last_version: int | None = None
    etag: str | None = None
    signed_list: bytes | None = None
    last_success: dt.datetime | None = None
    last_attempt: dt.datetime | None = None
    last_error: str | None = None

    def status_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "url": self.url, "namespace": self.namespace, "endorser_dn": self.endorser_dn,
            "endorser_ca": self.endorser_ca, "list_identifier": self.list_identifier, "select": self.selectors,
            "interval_seconds": self.interval_seconds, "grace_seconds": self.grace_seconds,
            "last_version": self.last_version, "last_success": to_text(self.last_success),
            "last_attempt": to_text(self.last_attempt), "last_error": self.last_error,
            "state": "failing" if self.last_error else ("ok" if self.last_success else "new"),
        }

    @classmethod
    def from_row(cls, row: Row) -> SubscriptionRecord:
        return cls(
            name=row["name"], url=row["url"], namespace=row["namespace"], ca_pem=row["ca_pem"],
            endorser_dn=row["endorser_dn"], endorser_ca=row["endorser_ca"], list_identifier=row["list_identifier"],
            selectors=json.loads(row["selectors"]), interval_seconds=int(row["interval_seconds"]),
            grace_seconds=int(row["grace_seconds"]),
            last_version=int(row["last_version"]) if row["last_version"] is not None else None,
            etag=row["etag"], signed_list=base64.b64decode(row["signed_list"]) if row["signed_list"] else None,
            last_success=from_text(row["last_success"]), last_attempt=from_text(row["last_attempt"]),
            last_error=row["last_error"],
        )


class SubscriptionStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def init(self) -> None:
        await apply_schema(self.db, SCHEMA)

    async def add(self, record: SubscriptionRecord) -> None:
        async with self.db.transaction() as tx:
            if await tx.fetchone("SELECT name FROM subscriptions WHERE name = $1", record.name):
                raise Conflict(f"a subscription named {record.name} exists already")
            if await tx.fetchone("SELECT name FROM subscriptions WHERE namespace = $1", record.namespace):
                raise Conflict(f"namespace {record.namespace} is used by another subscription")
            await tx.execute(
                "INSERT INTO subscriptions (name, url, namespace, ca_pem, endorser_dn, endorser_ca, list_identifier,"
                " selectors, interval_seconds, grace_seconds) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                record.name, record.url, record.namespace, record.ca_pem, record.endorser_dn, record.endorser_ca,
                record.list_identifier, json.dumps(record.selectors, sort_keys=True), record.interval_seconds,
                record.grace_seconds,
            )

    async def get(self, name: str) -> SubscriptionRecord:
        row = await self.db.fetchone("SELECT * FROM subscriptions WHERE name = $1", name)
        if row is None:
            raise NotFound(f"no subscription named {name}")
        return SubscriptionRecord.from_row(row)

    async def all(self) -> list[SubscriptionRecord]:
        return [SubscriptionRecord.from_row(r) for r in await self.db.fetch("SELECT * FROM subscriptions ORDER BY name")]

    async def schedule(self) -> list[tuple[str, str, int, dt.datetime | None]]:
        """(name, url, interval, last attempt) of every subscription: what the sync loop needs
        each second, without loading the stored lists."""
        rows = await self.db.fetch("SELECT name, url, interval_seconds, last_attempt FROM subscriptions ORDER BY name")
        return [(r["name"], r["url"], int(r["interval_seconds"]), from_text(r["last_attempt"])) for r in rows]

    async def remove(self, name: str) -> list[str]:
        """Delete a subscription; returns the identifiers it had mirrored."""
        async with self.db.transaction() as tx:
            if not await tx.fetchone("SELECT name FROM subscriptions WHERE name = $1", name):
                raise NotFound(f"no subscription named {name}")
            rows = await tx.fetch("SELECT identifier FROM mirrored WHERE subscription = $1", name)
            for table in ("mirrored", "seen_images"):
                await tx.execute(f"DELETE FROM {table} WHERE subscription = $1", name)
            await tx.execute("DELETE FROM subscriptions WHERE name = $1", name)
        return [r["identifier"] for r in rows]

    async def record_failure(self, name: str, error: str, now: dt.datetime) -> None:
        await self.db.execute("UPDATE subscriptions SET last_error = $1, last_attempt = $2 WHERE name = $3",
                              error, to_text(now), name)

    async def record_unchanged(self, name: str, now: dt.datetime) -> None:
        await self.db.execute("UPDATE subscriptions SET last_error = NULL, last_attempt = $1, last_success = $1"
                              " WHERE name = $2", to_text(now), name)

    async def record_accepted(self, name: str, list_identifier: str, version: int, etag: str | None,
                              signed_list: bytes, seen: dict[str, str], now: dt.datetime) -> None:
        """Keep a verified list as the last good one, and remember its images."""
        async with self.db.transaction() as tx:
            await tx.execute(
                "UPDATE subscriptions SET list_identifier = $1, last_version = $2, etag = $3, signed_list = $4,"
                " last_success = $5, last_attempt = $5, last_error = NULL WHERE name = $6",
                list_identifier, version, etag, base64.b64encode(signed_list).decode(), to_text(now), name,
            )
            for identifier, sha512 in seen.items():
                await tx.execute(
                    "INSERT INTO seen_images (subscription, identifier, sha512) VALUES ($1, $2, $3)"
                    " ON CONFLICT (subscription, identifier) DO NOTHING", name, identifier, sha512)

    async def seen(self, name: str) -> dict[str, str]:
        rows = await self.db.fetch("SELECT identifier, sha512 FROM seen_images WHERE subscription = $1", name)
        return {r["identifier"]: r["sha512"] for r in rows}

    async def mirrored(self, name: str) -> dict[str, dt.datetime | None]:
        rows = await self.db.fetch("SELECT identifier, missing_since FROM mirrored WHERE subscription = $1", name)
        return {r["identifier"]: from_text(r["missing_since"]) for r in rows}

    async def add_mirrored(self, name: str, identifier: str) -> None:
        await self.db.execute("INSERT INTO mirrored (subscription, identifier) VALUES ($1, $2)"
                              " ON CONFLICT (subscription, identifier) DO NOTHING", name, identifier)

    async def set_missing(self, name: str, identifier: str, since: dt.datetime | None) -> None:
        await self.db.execute("UPDATE mirrored SET missing_since = $1 WHERE subscription = $2 AND identifier = $3",
                              to_text(since), name, identifier)

    async def drop_mirrored(self, name: str, identifier: str) -> None:
        await self.db.execute("DELETE FROM mirrored WHERE subscription = $1 AND identifier = $2", name, identifier)
