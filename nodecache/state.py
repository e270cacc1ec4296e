"""The daemon's state database (SQLite): what it accepted from each catalogue, what it
holds, and who uses what.

- ``lists``: per catalogue, the last accepted list as its signed bytes (as fetched), so a
  restart verifies it again and keeps the last good list in force, and rollback checks
  survive;
- ``known``: every image identifier ever accepted from a catalogue, with its sha512
  (an identifier that comes back with other bytes is refused);
- ``images``: per sha512, what the cache holds and in which state ("fetching",
  "staged", "refused", "failed"), where, and when it was last used;
- ``refs``: who uses a staged image (a VM's overlay or snapshot), with the disk that
  proves it, so eviction never removes a base in use;
- ``vms``: every VM the provisioning shim made here, until it is destroyed.

The database is a record; the disk is the truth. At start-up the daemon reconciles
the two (:meth:`nodecache.cache.CacheStore.reconcile`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

from vmic.imagelist.model import ImageList

from .storage.base import Base

SCHEMA = """
CREATE TABLE IF NOT EXISTS lists (
    catalogue TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    content BLOB NOT NULL,
    accepted REAL NOT NULL,
    signed BLOB
);
CREATE TABLE IF NOT EXISTS known (
    catalogue TEXT NOT NULL,
    identifier TEXT NOT NULL,
    sha512 TEXT NOT NULL,
    PRIMARY KEY (catalogue, identifier)
);
CREATE TABLE IF NOT EXISTS images (
    sha512 TEXT PRIMARY KEY,
    identifier TEXT NOT NULL,
    title TEXT NOT NULL,
    version TEXT NOT NULL,
    catalogue TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    location TEXT NOT NULL DEFAULT '',
    format TEXT NOT NULL DEFAULT '',
    size INTEGER NOT NULL DEFAULT 0,
    staged REAL,
    last_used REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS vms (
    name TEXT PRIMARY KEY,
    uuid TEXT NOT NULL,
    sha512 TEXT NOT NULL,
    identifier TEXT NOT NULL,
    title TEXT NOT NULL,
    version TEXT NOT NULL,
    disk TEXT NOT NULL,
    disk_kind TEXT NOT NULL,
    iso TEXT NOT NULL,
    memory_mib INTEGER NOT NULL,
    vcpus INTEGER NOT NULL,
    pin TEXT NOT NULL,
    created REAL NOT NULL,
    expires REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS refs (
    sha512 TEXT NOT NULL,
    holder TEXT NOT NULL,
    disk TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    PRIMARY KEY (holder)
);
"""


@dataclass(frozen=True)
class HeldImage:
    sha512: str
    identifier: str
    title: str
    version: str
    catalogue: str
    state: str
    reason: str
    location: str  #: base file path or "vg/lv"
    format: str
    size: int  #: bytes the cache holds for it
    staged: float | None
    last_used: float

    def to_json(self) -> dict[str, Any]:
        """What the node API shows of it (its own list of fields: a column renamed in the
        database does not change the API)."""
        return {"sha512": self.sha512, "identifier": self.identifier, "title": self.title, "version": self.version,
                "catalogue": self.catalogue, "state": self.state, "reason": self.reason, "location": self.location,
                "format": self.format, "size": self.size, "staged": self.staged, "last_used": self.last_used}

    def changed(self, **fields: Any) -> HeldImage:
        return dataclasses.replace(self, **fields)

    def base(self) -> Base:
        """The staged base, as a VM disk (or a reference check) needs it."""
        return Base(self.sha512, self.location, self.format, self.size)


@dataclass(frozen=True)
class Reference:
    sha512: str
    holder: str
    disk: str
    created: float


@dataclass(frozen=True)
class VmRecord:
    name: str
    uuid: str
    sha512: str
    identifier: str
    title: str
    version: str
    disk: str
    disk_kind: str  #: "file" (qcow2 overlay) or "block" (LVM snapshot)
    iso: str
    memory_mib: int
    vcpus: int
    pin: str  #: "0,1" or ""
    created: float
    expires: float

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "uuid": self.uuid, "sha512": self.sha512, "identifier": self.identifier,
                "title": self.title, "version": self.version, "disk": self.disk, "disk_kind": self.disk_kind,
                "iso": self.iso, "memory_mib": self.memory_mib, "vcpus": self.vcpus, "pin": self.pin,
                "created": self.created, "expires": self.expires}

    def row(self) -> tuple[Any, ...]:
        return (self.name, self.uuid, self.sha512, self.identifier, self.title, self.version, self.disk,
                self.disk_kind, self.iso, self.memory_mib, self.vcpus, self.pin, self.created, self.expires)


class State:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self.db = db

    @classmethod
    async def open(cls, path: Path) -> State:
        """The database at ``path``, 0600 (SQLite gives its -wal and -shm files the same mode)."""
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        os.chmod(path, 0o600)
        db = await aiosqlite.connect(path)
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=FULL")
        await db.executescript(SCHEMA)
        async with db.execute("PRAGMA table_info(lists)") as cursor:
            if "signed" not in {row[1] for row in await cursor.fetchall()}:  # a database of an older release
                await db.execute("ALTER TABLE lists ADD COLUMN signed BLOB")
        await db.commit()
        return cls(db)

    async def close(self) -> None:
        await self.db.close()

    # --- lists ------------------------------------------------------------------------

    async def save_list(self, catalogue: str, image_list: ImageList, signed: bytes) -> None:
        """``signed``: the list's S/MIME message as fetched (``content``: its version, for
        people reading the database)."""
        await self.db.execute(
            "INSERT INTO lists VALUES (?, ?, ?, ?, ?) ON CONFLICT (catalogue) DO UPDATE SET "
            "version = excluded.version, content = excluded.content, accepted = excluded.accepted, "
            "signed = excluded.signed",
            (catalogue, image_list.version, image_list.to_bytes(), time.time(), signed))
        await self.db.executemany(
            "INSERT OR IGNORE INTO known VALUES (?, ?, ?)",
            [(catalogue, image.identifier, image.sha512) for image in image_list.images])
        await self.db.commit()

    async def last_list(self, catalogue: str) -> tuple[bytes, dt.datetime] | None:
        """The signed bytes of the last list accepted from ``catalogue`` and when (to verify again)."""
        async with self.db.execute("SELECT signed, accepted FROM lists WHERE catalogue = ? AND signed IS NOT NULL",
                                   (catalogue,)) as cursor:
            row = await cursor.fetchone()
        return (bytes(row[0]), dt.datetime.fromtimestamp(row[1], dt.timezone.utc)) if row else None

    async def known_images(self, catalogue: str) -> dict[str, str]:
        async with self.db.execute("SELECT identifier, sha512 FROM known WHERE catalogue = ?",
                                   (catalogue,)) as cursor:
            return {identifier: sha for identifier, sha in await cursor.fetchall()}

    # --- images -----------------------------------------------------------------------

    async def put(self, image: HeldImage) -> None:
        await self.db.execute("INSERT OR REPLACE INTO images VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                              (image.sha512, image.identifier, image.title, image.version, image.catalogue,
                               image.state, image.reason, image.location, image.format, image.size,
                               image.staged, image.last_used))
        await self.db.commit()

    async def get(self, sha512: str) -> HeldImage | None:
        async with self.db.execute("SELECT * FROM images WHERE sha512 = ?", (sha512,)) as cursor:
            row = await cursor.fetchone()
        return HeldImage(*row) if row else None

    async def images(self) -> list[HeldImage]:
        async with self.db.execute("SELECT * FROM images ORDER BY title, version") as cursor:
            return [HeldImage(*row) for row in await cursor.fetchall()]

    async def touch(self, sha512: str) -> None:
        await self.db.execute("UPDATE images SET last_used = ? WHERE sha512 = ?", (time.time(), sha512))
        await self.db.commit()

    async def forget(self, sha512: str) -> None:
        await self.db.execute("DELETE FROM images WHERE sha512 = ?", (sha512,))
        await self.db.commit()

    # --- VMs -------------------------------------------------------------------------------

    async def add_vm(self, vm: VmRecord) -> None:
        await self.db.execute("INSERT INTO vms VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                              vm.row())
        await self.db.commit()

    async def vm(self, name: str) -> VmRecord | None:
        async with self.db.execute("SELECT * FROM vms WHERE name = ?", (name,)) as cursor:
            row = await cursor.fetchone()
        return VmRecord(*row) if row else None

    async def vms(self) -> list[VmRecord]:
        async with self.db.execute("SELECT * FROM vms ORDER BY name") as cursor:
            return [VmRecord(*row) for row in await cursor.fetchall()]

    async def update_vm(self, name: str, **changes: object) -> None:
        assignments = ", ".join(f"{key} = ?" for key in changes)  # keys are VmRecord fields, never input
        await self.db.execute(f"UPDATE vms SET {assignments} WHERE name = ?", (*changes.values(), name))
        await self.db.commit()

    async def drop_vm(self, name: str) -> None:
        await self.db.execute("DELETE FROM vms WHERE name = ?", (name,))
        await self.db.commit()

    # --- references ---------------------------------------------------------------------

    async def add_ref(self, sha512: str, holder: str, disk: str) -> None:
        await self.db.execute("INSERT OR REPLACE INTO refs VALUES (?, ?, ?, ?)", (sha512, holder, disk, time.time()))
        await self.db.commit()

    async def drop_ref(self, holder: str) -> bool:
        cursor = await self.db.execute("DELETE FROM refs WHERE holder = ?", (holder,))
        await self.db.commit()
        return cursor.rowcount > 0

    async def refs(self) -> list[Reference]:
        async with self.db.execute("SELECT * FROM refs ORDER BY holder") as cursor:
            return [Reference(*row) for row in await cursor.fetchall()]
