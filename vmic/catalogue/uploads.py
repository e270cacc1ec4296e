"""Resumable uploads, following the tus 1.0 core protocol (https://tus.io).

1. ``POST /api/v1/uploads`` with a JSON body naming the image (namespace, name, version,
   size, optional sha512 and HEPiX fields) -> ``201``, ``Location: /api/v1/uploads/<id>``.
   (tus's *creation* extension puts metadata in a header; here it is the JSON body.)
2. ``PATCH <location>`` with ``Upload-Offset: <n>`` and the bytes from n on
   (``Content-Type: application/offset+octet-stream``) -> ``204`` with the new
   ``Upload-Offset``; when the last byte arrives, the image is verified and published,
   and the answer is ``201`` with the image record.
   With ``Content-Type: application/vnd.vmic.extents`` the body leaves zeros out
   (:mod:`vmic.extent_stream`); they are hashed here and stored as holes. The PATCH
   that completes an upload may carry ``Upload-Sha512``, the sha512 the publisher
   hashed meanwhile (a publisher need not hash before it sends): it is checked like a
   declared one.
3. After a dropped connection: ``HEAD <location>`` gives ``Upload-Offset``; go on from there.
4. ``DELETE <location>`` abandons an upload (tus *termination*).
5. ``GET /api/v1/uploads``: the publisher's open uploads (an admin's: everyone's).

Limits: a publisher has at most ``max_uploads_per_publisher`` open uploads (429 beyond)
of ``max_upload_bytes_per_publisher`` bytes in all (507 beyond); an upload is refused
(507) if it would eat into ``free_space_reserve``, the space kept for the database,
revocation and signing; an upload that receives nothing for ``upload_expiry`` is
dropped with its bytes.

Nothing becomes visible before its last byte is hashed, compared with the declared
sha512 and synced: a blob is moved under its hash, then its image record and a new
list version are written in one transaction.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from ..errors import BadRequest, ChecksumMismatch, Conflict, Forbidden, StorageError, TooLarge, TooManyRequests
from ..imagelist.model import COMPRESSIONS, FORMATS
from ..log import event
from ..sparse import Run
from .blobs import BlobStore, HashState
from .config import Publisher
from .names import check_identifier, check_name, check_sha512
from .store import ImageRecord, ImageRequest, MetadataStore, UploadRecord

log = logging.getLogger("vmic.catalogue.uploads")

#: part files of partner images being mirrored (see vmic.sync.mirror) start with this
MIRROR_PREFIX = "mirror-"

_TEXT_FIELDS = ("title", "description", "hypervisor", "os", "osversion", "arch", "comments")
_INT_FIELDS = ("ram_minimum", "core_minimum")


def parse_request(body: Any) -> ImageRequest:
    """Validate a publisher's JSON into an :class:`ImageRequest` (400 on anything odd)."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    allowed = {"namespace", "name", "version", "size", "sha512", "identifier", "expires", "format", "compression",
               *_TEXT_FIELDS, *_INT_FIELDS}
    unknown = set(body) - allowed
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(sorted(unknown))}")
    for key in ("namespace", "name", "version", "size"):
        if key not in body:
            raise BadRequest(f"missing field: {key}")
    size = body["size"]
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise BadRequest("size must be a positive whole number of bytes")
    metadata: dict[str, Any] = {}
    for key in _TEXT_FIELDS:
        if key in body:
            if not isinstance(body[key], str) or len(body[key]) > 4096:
                raise BadRequest(f"{key} must be text of at most 4096 characters")
            metadata[key] = body[key]
    for key in _INT_FIELDS:
        if key in body:
            if not isinstance(body[key], int) or isinstance(body[key], bool) or body[key] < 0:
                raise BadRequest(f"{key} must be a whole number >= 0")
            metadata[key] = body[key]
    metadata["format"] = body.get("format", "raw")
    if metadata["format"] not in FORMATS:
        raise BadRequest(f"format must be one of {', '.join(FORMATS)}")
    metadata["compression"] = body.get("compression", "none")
    if metadata["compression"] not in COMPRESSIONS:
        raise BadRequest(f"compression must be one of {', '.join(COMPRESSIONS)}")
    expires = None
    if body.get("expires") is not None:
        try:
            expires = dt.datetime.fromisoformat(str(body["expires"]).replace("Z", "+00:00"))
        except ValueError:
            raise BadRequest("expires must be an ISO 8601 date, e.g. 2027-01-31T00:00:00Z") from None
        if expires.tzinfo is None:
            raise BadRequest("expires must name its time zone (e.g. end in Z)")
    return ImageRequest(
        namespace=check_name(body["namespace"], "namespace"),
        name=check_name(body["name"], "image name"),
        version=check_name(str(body["version"]), "version"),
        size=size,
        sha512=check_sha512(body["sha512"]) if body.get("sha512") is not None else None,
        identifier=check_identifier(body["identifier"]) if body.get("identifier") is not None else None,
        expires=expires,
        metadata=metadata,
    )


@dataclass(frozen=True)
class UploadLimits:
    per_publisher: int = 10
    bytes_per_publisher: int = 256 * 2**30
    free_space_reserve: int = 2**30
    expiry: dt.timedelta = dt.timedelta(hours=24)


@dataclass(frozen=True)
class UploadView:
    """What ``GET /api/v1/uploads`` shows of one upload."""

    record: UploadRecord
    offset: int
    last_activity: dt.datetime
    expires: dt.datetime

    def to_json(self) -> dict[str, Any]:
        request = self.record.request
        return {"id": self.record.id, "location": f"/api/v1/uploads/{self.record.id}",
                "publisher": self.record.publisher, "namespace": request.namespace, "name": request.name,
                "version": request.version, "length": self.record.length, "offset": self.offset,
                "created": self.record.created.isoformat(), "last_activity": self.last_activity.isoformat(),
                "expires": self.expires.isoformat()}


@dataclass(frozen=True)
class PatchResult:
    offset: int
    image: ImageRecord | None  # set when this PATCH finished and published the upload


class Uploads:
    """The upload state machine. Holds running hashes in memory; the part file is the truth."""

    def __init__(self, store: MetadataStore, blobs: BlobStore, max_bytes: int, limits: UploadLimits | None = None,
                 free_bytes: Callable[[], int] | None = None) -> None:
        self.store = store
        self.blobs = blobs
        self.max_bytes = max_bytes
        self.limits = limits or UploadLimits()
        #: free bytes on the disk of the blob store (injected in tests)
        self.free_bytes = free_bytes or (lambda: _free_bytes(blobs.part_dir))
        self._hashes: dict[str, HashState] = {}
        self._busy: set[str] = set()

    # --- what is open ------------------------------------------------------------------------

    async def views(self, publisher: Publisher | None = None) -> list[UploadView]:
        """Open uploads (of ``publisher`` only, unless None), oldest first."""
        result = []
        for record in await self.store.uploads():
            if publisher is not None and record.publisher != publisher.name:
                continue
            offset = self.blobs.part_size(record.id) or 0
            active = max(record.created, self._touched(record.id) or record.created)
            result.append(UploadView(record, offset, active, active + self.limits.expiry))
        return sorted(result, key=lambda v: v.record.created)

    def _touched(self, upload_id: str) -> dt.datetime | None:
        try:
            return dt.datetime.fromtimestamp(self.blobs.part(upload_id).stat().st_mtime, dt.timezone.utc)
        except OSError:
            return None

    async def expire(self, now: dt.datetime | None = None) -> list[str]:
        """Drop every upload that received nothing for the expiry time, with its bytes."""
        now = now or dt.datetime.now(dt.timezone.utc)
        dropped = []
        for view in await self.views():
            if view.expires <= now and view.record.id not in self._busy:
                await self.abort_record(view.record)
                event(log, "upload.expired", upload=view.record.id, publisher=view.record.publisher,
                      offset=view.offset, bytes=view.record.length)
                dropped.append(view.record.id)
        return dropped

    async def run_expiry(self, every: float = 300.0) -> None:
        """Expire uploads every ``every`` seconds, until cancelled."""
        while True:
            try:
                await self.expire()
            except Exception:  # the database or disk is unwell: try again at the next round
                log.exception("upload.expiry_failed")
            await asyncio.sleep(every)

    def _check_room(self, needed: int, committed: int, what: str) -> None:
        free, reserve = self.free_bytes(), self.limits.free_space_reserve
        if free - reserve < needed + committed:
            raise StorageError(
                f"not enough space for {what}: {free} bytes free, {committed} promised to uploads in progress, "
                f"{reserve} kept free for the database, revocation and signing; try later or ask the operator")

    async def recover(self) -> None:
        await self._sweep()
        await self.expire()

    async def _sweep(self) -> None:
        """After a crash: drop part files without a record and records without a part file."""
        records = {u.id for u in await self.store.uploads()}
        parts = {p for p in self.blobs.part_ids() if not p.startswith(MIRROR_PREFIX)}  # those are the syncer's
        for orphan in parts - records:
            self.blobs.delete_part(orphan)
            event(log, "upload.swept", upload=orphan, reason="no upload record")
        for upload_id in records - parts:
            await self.store.delete_upload(upload_id)
            event(log, "upload.swept", upload=upload_id, reason="part file missing")

    async def start(self, publisher: Publisher, body: Any) -> UploadRecord:
        request = parse_request(body)
        if request.namespace not in publisher.namespaces:
            raise Forbidden(f"publisher {publisher.name} may not publish in namespace {request.namespace}")
        if request.identifier is not None and not publisher.admin:
            # identifiers are the catalogue's to choose: a publisher taking a partner image's
            # identifier would block that image from ever being mirrored here
            raise Forbidden(f"publisher {publisher.name} may not choose an image identifier (an admin may)")
        if request.size > self.max_bytes:
            raise TooLarge(f"image of {request.size} bytes is larger than this catalogue's limit of {self.max_bytes}")
        views = await self.views()
        own = [v for v in views if v.record.publisher == publisher.name]
        if len(own) >= self.limits.per_publisher:
            raise TooManyRequests(f"publisher {publisher.name} has {len(own)} open uploads, the limit: finish or "
                                  "cancel one first (vmic uploads list / vmic uploads cancel ID)")
        in_flight = sum(v.record.length for v in own)
        if in_flight + request.size > self.limits.bytes_per_publisher:
            raise StorageError(f"publisher {publisher.name} has uploads of {in_flight} bytes open; with this one "
                               f"that is more than its limit of {self.limits.bytes_per_publisher}: finish or cancel "
                               "some first")
        self._check_room(request.size, sum(v.record.length - v.offset for v in views), "this upload")
        record = await self.store.add_upload(publisher.name, request)
        self.blobs.create_part(record.id)
        event(log, "upload.started", upload=record.id, publisher=publisher.name, namespace=request.namespace,
              image=request.name, version=request.version, bytes=request.size)
        return record

    async def owned(self, publisher: Publisher, upload_id: str) -> tuple[UploadRecord, int]:
        """The upload and its current offset, if ``publisher`` started it."""
        record = await self.store.upload(check_identifier(upload_id, "upload id"))
        if record.publisher != publisher.name:
            raise Forbidden(f"upload {upload_id} belongs to another publisher")
        return record, self.blobs.part_size(upload_id) or 0

    async def patch(self, publisher: Publisher, upload_id: str, offset: int, chunks: AsyncIterator[Run],
                    sha512: str | None = None) -> PatchResult:
        """Take ``chunks`` at ``offset``; ``sha512``, if this completes the upload, must be its hash."""
        record, current = await self.owned(publisher, upload_id)
        if upload_id in self._busy:
            raise Conflict(f"upload {upload_id} is receiving data on another connection")
        if offset != current:
            raise Conflict(f"Upload-Offset {offset} does not match the stored offset {current}")
        remaining = record.length - current
        others = sum(v.record.length - v.offset for v in await self.views() if v.record.id != upload_id)
        self._check_room(remaining, others, f"the rest of upload {upload_id}")
        self._busy.add(upload_id)
        try:
            state = self._hashes.get(upload_id)
            if state is None or state.stale or state.count != current:
                state = await self.blobs.rehash(upload_id)
            self._hashes[upload_id] = state
            try:
                await self.blobs.append(upload_id, state, chunks, record.length - current)
            except OverflowError:
                raise TooLarge(f"more bytes than the declared size {record.length}") from None
            finally:
                event(log, "upload.progress", upload=upload_id, offset=state.count, bytes=record.length)
            if state.count < record.length:
                return PatchResult(state.count, None)
            return PatchResult(state.count, await self._finish(record, state, sha512))
        finally:
            self._busy.discard(upload_id)

    async def _finish(self, record: UploadRecord, state: HashState, claimed: str | None) -> ImageRecord:
        sha512 = state.hasher.hexdigest()
        for declared in (record.request.sha512, claimed):
            if declared is None or declared == sha512:
                continue
            await self.abort_record(record)
            raise ChecksumMismatch(
                f"uploaded bytes have sha512 {sha512[:16]}..., the declared sha512 is {declared[:16]}...; "
                "the upload was discarded"
            )
        try:
            with self.blobs.pin(sha512):
                await self.blobs.commit(record.id, sha512)
                self._hashes.pop(record.id, None)
                image = await self.store.publish(record, sha512, record.publisher)
        except Conflict:  # another upload took this version meanwhile
            await self.abort_record(record)
            if sha512 not in await self.store.live_sha512s():
                self.blobs.remove(sha512)
            raise
        event(log, "image.published", image=image.identifier, namespace=image.namespace, name=image.name,
              version=image.version, bytes=image.size, sha512=sha512)
        return image

    async def abort(self, publisher: Publisher, upload_id: str) -> None:
        record, _ = await self.owned(publisher, upload_id)
        if upload_id in self._busy:
            raise Conflict(f"upload {upload_id} is receiving data on another connection")
        await self.abort_record(record)

    async def abort_record(self, record: UploadRecord) -> None:
        self._hashes.pop(record.id, None)
        self.blobs.delete_part(record.id)
        await self.store.delete_upload(record.id)
        event(log, "upload.aborted", upload=record.id)



def _free_bytes(path: os.PathLike[str]) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize
