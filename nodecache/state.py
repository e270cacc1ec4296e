"""The daemon's state database (SQLite): what it accepted from each catalogue, what it
holds, and who uses what.

- ``lists``: per catalogue, the last accepted list (its verified content), so a restart
  keeps the last good list in force and rollback checks survive;
- ``known``: every image identifier ever accepted from a catalogue, with its sha512
  (an identifier that comes back with other bytes is refused);
- ``images``: per sha512, what the cache holds and in which state ("fetching",
  "staged", "refused", "failed"), where, and when it was last used;
- ``refs``: who uses a staged image (a VM's overlay or snapshot), with the disk that
  proves it, so eviction never removes a base in use;
- ``vms``: every VM the provisioning shim made here, until it is destroyed.

The database is a record; the disk is the truth. At start-up the daemon reconciles
the two (:meth:`nodecache.daemon.NodeCache.start`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import aiosqlite

from vmic.imagelist.model import ImageList

SCHEMA = """
CREATE TABLE IF NOT EXISTS lists (
    catalogue TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    content BLOB NOT NULL,
    accepted REAL NOT NULL
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
        await db.commit()
        return cls(db)

    async def close(self) -> None:
        await self.db.close()

    # --- lists ------------------------------------------------------------------------

    async def save_list(self, catalogue: str, image_list: ImageList) -> None:
        await self.db.execute(
            "INSERT INTO lists VALUES (?, ?, ?, ?) ON CONFLICT (catalogue) DO UPDATE SET "
            "version = excluded.version, content = excluded.content, accepted = excluded.accepted",
            (catalogue, image_list.version, image_list.to_bytes(), time.time()))
        await self.db.executemany(
            "INSERT OR IGNORE INTO known VALUES (?, ?, ?)",
            [(catalogue, image.identifier, image.sha512) for image in image_list.images])
        await self.db.commit()

    async def last_list(self, catalogue: str) -> ImageList | None:
        async with self.db.execute("SELECT content FROM lists WHERE catalogue = ?", (catalogue,)) as cursor:
            row = await cursor.fetchone()
        return ImageList.parse(row[0]) if row else None

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
                              tuple(vm.__dict__.values()))
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
