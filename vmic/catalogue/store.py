"""Image and upload records: the catalogue's metadata, on :mod:`.db`.

An *image record* is one published image version. It is never deleted: revoking sets
``revoked``, so its identifier can never be given to other bytes. An *upload record*
is an upload in progress; it becomes an image record in the same transaction that
publishes it, so there is never an image without its bytes, nor a half-published one.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from ..errors import Conflict, NotFound
from .db import Database, Queries, Row, UniqueViolation, apply_schema, from_text, required_time, to_text

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS images (
        identifier TEXT PRIMARY KEY,
        namespace TEXT NOT NULL,
        name TEXT NOT NULL,
        version TEXT NOT NULL,
        sha512 TEXT NOT NULL,
        size BIGINT NOT NULL,
        publisher TEXT NOT NULL,
        created TEXT NOT NULL,
        expires TEXT,
        revoked TEXT,
        metadata TEXT NOT NULL,
        UNIQUE (namespace, name, version)
    )""",
    "CREATE INDEX IF NOT EXISTS images_sha512 ON images (sha512)",
    """CREATE TABLE IF NOT EXISTS uploads (
        id TEXT PRIMARY KEY,
        publisher TEXT NOT NULL,
        length BIGINT NOT NULL,
        request TEXT NOT NULL,
        created TEXT NOT NULL
    )""",
    "CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS torrents (
        identifier TEXT PRIMARY KEY,
        btih TEXT NOT NULL,
        btmh TEXT,
        torrent TEXT NOT NULL
    )""",
    "CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value BIGINT NOT NULL)",
    "INSERT INTO counters (name, value) VALUES ('list_version', 0) ON CONFLICT (name) DO NOTHING",
]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)



@dataclass(frozen=True)
class ImageRequest:
    """What a publisher asks to publish (validated by :mod:`.uploads`)."""

    namespace: str
    name: str
    version: str
    size: int
    sha512: str | None = None
    identifier: str | None = None
    expires: dt.datetime | None = None
    #: HEPiX descriptive fields: title, description, format, compression, os, ...
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        body = dataclasses.asdict(self)
        body["expires"] = to_text(self.expires)
        return json.dumps(body, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ImageRequest:
        body = json.loads(text)
        body["expires"] = from_text(body.get("expires"))
        return cls(**body)


@dataclass(frozen=True)
class ImageRecord:
    identifier: str
    namespace: str
    name: str
    version: str
    sha512: str
    size: int
    publisher: str
    created: dt.datetime
    expires: dt.datetime | None
    revoked: dt.datetime | None
    metadata: dict[str, Any]

    def current(self, now: dt.datetime) -> bool:
        return self.revoked is None and (self.expires is None or self.expires > now)

    @classmethod
    def from_row(cls, row: Row) -> ImageRecord:
        return cls(
            identifier=row["identifier"],
            namespace=row["namespace"],
            name=row["name"],
            version=row["version"],
            sha512=row["sha512"],
            size=int(row["size"]),
            publisher=row["publisher"],
            created=required_time(row["created"]),
            expires=from_text(row["expires"]),
            revoked=from_text(row["revoked"]),
            metadata=json.loads(row["metadata"]),
        )


@dataclass(frozen=True)
class UploadRecord:
    id: str
    publisher: str
    length: int
    request: ImageRequest
    created: dt.datetime

    @classmethod
    def from_row(cls, row: Row) -> UploadRecord:
        return cls(
            id=row["id"],
            publisher=row["publisher"],
            length=int(row["length"]),
            request=ImageRequest.from_json(row["request"]),
            created=required_time(row["created"]),
        )


class MetadataStore:
    """Every read and write of catalogue metadata. Same code on SQLite and PostgreSQL."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def init(self) -> None:
        await apply_schema(self.db, SCHEMA)

    async def close(self) -> None:
        await self.db.close()

    # --- settings and the list version ------------------------------------------------

    async def setting(self, name: str, default: str) -> str:
        """The stored value, or store ``default`` the first time (e.g. the list uuid)."""
        async with self.db.transaction() as tx:
            await tx.execute(
                "INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING", name, default
            )
            row = await tx.fetchone("SELECT value FROM settings WHERE name = $1", name)
        assert row is not None
        return str(row["value"])

    async def bump_list_version(self) -> int:
        """A new list version: every signing of a changed (or renewed) list takes one."""
        row = await self.db.fetchone(
            "UPDATE counters SET value = value + 1 WHERE name = 'list_version' RETURNING value"
        )
        assert row is not None
        return int(row["value"])

    # --- uploads ----------------------------------------------------------------------

    async def check_publishable(self, request: ImageRequest, tx: Queries | None = None) -> None:
        """Raise :class:`Conflict` if the version or the identifier is taken."""
        q = tx or self.db
        row = await q.fetchone(
            "SELECT identifier FROM images WHERE namespace = $1 AND name = $2 AND version = $3",
            request.namespace, request.name, request.version,
        )
        if row is not None:
            raise Conflict(
                f"{request.namespace}/{request.name} version {request.version} exists already "
                f"(image {row['identifier']}); versions are immutable, publish a new version"
            )
        if request.identifier is not None:
            row = await q.fetchone("SELECT sha512 FROM images WHERE identifier = $1", request.identifier)
            if row is not None:
                raise Conflict(f"image identifier {request.identifier} is used already and is never reused")

    async def add_upload(self, publisher: str, request: ImageRequest) -> UploadRecord:
        await self.check_publishable(request)
        record = UploadRecord(str(uuid.uuid4()), publisher, request.size, request, utcnow())
        await self.db.execute(
            "INSERT INTO uploads (id, publisher, length, request, created) VALUES ($1, $2, $3, $4, $5)",
            record.id, publisher, record.length, request.to_json(), to_text(record.created),
        )
        return record

    async def upload(self, upload_id: str) -> UploadRecord:
        row = await self.db.fetchone("SELECT * FROM uploads WHERE id = $1", upload_id)
        if row is None:
            raise NotFound(f"no upload {upload_id} (finished, aborted, or never started)")
        return UploadRecord.from_row(row)

    async def uploads(self) -> list[UploadRecord]:
        return [UploadRecord.from_row(r) for r in await self.db.fetch("SELECT * FROM uploads")]

    async def delete_upload(self, upload_id: str) -> None:
        await self.db.execute("DELETE FROM uploads WHERE id = $1", upload_id)

    async def publish(self, upload: UploadRecord, sha512: str, publisher: str) -> ImageRecord:
        """Turn a finished upload into an image record, atomically (then the list is re-signed)."""
        request = upload.request
        record = ImageRecord(
            identifier=request.identifier or str(uuid.uuid4()),
            namespace=request.namespace,
            name=request.name,
            version=request.version,
            sha512=sha512,
            size=upload.length,
            publisher=publisher,
            created=utcnow(),
            expires=request.expires,
            revoked=None,
            metadata=request.metadata,
        )
        await self.insert_image(record, request, upload_id=upload.id)
        return record

    async def insert_image(self, record: ImageRecord, request: ImageRequest, upload_id: str | None = None) -> None:
        """Add an image record (and drop its finished upload) in one transaction.

        Raises :class:`Conflict` if the version or the identifier is taken, also when
        another catalogue instance on a shared database takes it at the same moment.
        """
        try:
            async with self.db.transaction() as tx:
                await self.check_publishable(request, tx)
                await tx.execute(
                    "INSERT INTO images (identifier, namespace, name, version, sha512, size, publisher, created,"
                    " expires, revoked, metadata) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, $10)",
                    record.identifier, record.namespace, record.name, record.version, record.sha512, record.size,
                    record.publisher, to_text(record.created), to_text(record.expires), json.dumps(record.metadata),
                )
                if upload_id is not None:
                    await tx.execute("DELETE FROM uploads WHERE id = $1", upload_id)
        except UniqueViolation:
            raise Conflict(
                f"{record.namespace}/{record.name} version {record.version} was just published by another upload"
            ) from None

    # --- images -----------------------------------------------------------------------

    async def image(self, identifier: str) -> ImageRecord:
        row = await self.db.fetchone("SELECT * FROM images WHERE identifier = $1", identifier)
        if row is None:
            raise NotFound(f"no image {identifier}")
        return ImageRecord.from_row(row)

    async def images(self) -> list[ImageRecord]:
        rows = await self.db.fetch("SELECT * FROM images ORDER BY namespace, name, created, identifier")
        return [ImageRecord.from_row(r) for r in rows]

    async def set_metadata(self, identifier: str, key: str, value: Any) -> ImageRecord:
        """Set (or with None, remove) one key of an image's metadata."""
        async with self.db.transaction() as tx:
            row = await tx.fetchone("SELECT * FROM images WHERE identifier = $1", identifier)
            if row is None:
                raise NotFound(f"no image {identifier}")
            metadata = json.loads(row["metadata"])
            if value is None:
                metadata.pop(key, None)
            else:
                metadata[key] = value
            await tx.execute("UPDATE images SET metadata = $1 WHERE identifier = $2", json.dumps(metadata), identifier)
            row = await tx.fetchone("SELECT * FROM images WHERE identifier = $1", identifier)
        assert row is not None
        return ImageRecord.from_row(row)

    async def revoke(self, identifier: str) -> ImageRecord:
        async with self.db.transaction() as tx:
            row = await tx.fetchone("SELECT * FROM images WHERE identifier = $1", identifier)
            if row is None:
                raise NotFound(f"no image {identifier}")
            if row["revoked"] is not None:
                return ImageRecord.from_row(row)
            await tx.execute("UPDATE images SET revoked = $1 WHERE identifier = $2", to_text(utcnow()), identifier)
            row = await tx.fetchone("SELECT * FROM images WHERE identifier = $1", identifier)
        assert row is not None
        return ImageRecord.from_row(row)

    # --- torrents ---------------------------------------------------------------------

    async def add_torrent(self, identifier: str, btih: str, btmh: str | None, torrent: bytes) -> None:
        await self.db.execute(
            "INSERT INTO torrents (identifier, btih, btmh, torrent) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (identifier) DO NOTHING", identifier, btih, btmh, base64.b64encode(torrent).decode())

    async def torrent(self, identifier: str) -> bytes:
        row = await self.db.fetchone("SELECT torrent FROM torrents WHERE identifier = $1", identifier)
        if row is None:
            raise NotFound(f"no torrent for image {identifier} (yet)")
        return base64.b64decode(row["torrent"])

    async def info_hashes(self) -> dict[str, tuple[str, str | None]]:
        """identifier -> (v1 info hash, v2 info hash) of every image that has a torrent."""
        rows = await self.db.fetch("SELECT identifier, btih, btmh FROM torrents")
        return {r["identifier"]: (r["btih"], r["btmh"]) for r in rows}

    async def live_sha512s(self, revoked_since: dt.datetime | None = None) -> set[str]:
        """Blobs that must be kept: those of every image not revoked, or revoked after
        ``revoked_since`` (still restorable)."""
        rows = await self.db.fetch("SELECT DISTINCT sha512, revoked FROM images")
        return {r["sha512"] for r in rows
                if r["revoked"] is None or (revoked_since is not None and required_time(r["revoked"]) > revoked_since)}

    async def restore(self, identifier: str) -> ImageRecord:
        """A revoked image version back in the list (the caller checked its bytes are kept)."""
        async with self.db.transaction() as tx:
            await tx.execute("UPDATE images SET revoked = NULL WHERE identifier = $1", identifier)
            row = await tx.fetchone("SELECT * FROM images WHERE identifier = $1", identifier)
        if row is None:
            raise NotFound(f"no image {identifier}")
        return ImageRecord.from_row(row)
