"""One sync of a partner subscription, and the loop that keeps them all in sync.

A sync:

1. fetches the partner's signed list (conditional GET; on 304 the last good list);
2. verifies it exactly as a node does (signature, CA, endorser, list id, dates,
   rollback, identifiers reused for other bytes); a list that fails is recorded as the
   reason and the last good list stays in force;
3. mirrors the selected images it does not have (HTTP, Range resume, sha512 checked)
   and imports them under the subscription's namespace, with their provenance;
4. revokes mirrored images the partner dropped, once the grace period has passed;
5. re-signs this catalogue's list if anything changed.

The loop syncs every subscription at its interval, and at once when the partner's
event stream (``/events``) announces a new list.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import re
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from ..capped import MAX_LIST_BYTES
from ..catalogue.names import check_name
from ..catalogue.store import ImageRecord, ImageRequest, utcnow
from ..errors import BadRequest, Conflict, ImageListError, ListTooLarge, NotFound
from ..events import events_url, watch_events
from ..follow import fetch_signed_list
from ..imagelist.extensions import NAME
from ..imagelist.model import EXT_COMPRESSION, Image, ImageList
from ..imagelist.policy import History, Subscription
from ..imagelist.verify import verify_signed_list
from ..log import event
from .image_filter import parse_selectors, selected
from .mirror import Mirror, MirrorError
from .records import SubscriptionRecord, SubscriptionStore
from .writer import CatalogueWriter

log = logging.getLogger("vmic.sync")


@dataclass
class SyncResult:
    subscription: str
    list_version: int | None = None
    imported: list[str] = field(default_factory=list)
    revoked: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"subscription": self.subscription, "list_version": self.list_version, "imported": self.imported,
                "revoked": self.revoked, "errors": self.errors, "ok": not self.errors}


def _slug(text: str, fallback: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")[:100]
    slug = re.sub(r"\.\.+", ".", slug)
    return slug if slug and slug[0].isalnum() else fallback


class Syncer:
    def __init__(self, catalogue: CatalogueWriter, records: SubscriptionStore, mirror: Mirror,
                 http: aiohttp.ClientSession, max_list_bytes: int = MAX_LIST_BYTES) -> None:
        self.catalogue = catalogue
        self.records = records
        self.mirror = mirror
        self.http = http
        #: a partner's list of more bytes is refused (list_too_large) before it is parsed
        self.max_list_bytes = max_list_bytes
        self._locks: dict[str, asyncio.Lock] = {}
        self._followers: dict[str, asyncio.Task[None]] = {}

    async def close(self) -> None:
        for task in self._followers.values():
            task.cancel()
        for task in self._followers.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # --- managing subscriptions ----------------------------------------------------------

    async def add(self, body: Any) -> SubscriptionRecord:
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object")
        for key in ("url", "ca_pem", "endorser_dn"):
            if not isinstance(body.get(key), str) or not body[key]:
                raise BadRequest(f"missing field: {key}")
        url = body["url"]
        if not url.startswith(("http://", "https://")):
            raise BadRequest("url must be the http(s) URL of a signed image list")
        if b"BEGIN CERTIFICATE" not in body["ca_pem"].encode():
            raise BadRequest("ca_pem must hold PEM CA certificates")
        name = check_name(body.get("name") or _slug(url.split("//", 1)[1].split("/", 1)[0], "partner"),
                          "subscription name")
        namespace = check_name(body.get("namespace") or name, "namespace")
        if namespace in self.catalogue.local_namespaces():
            raise Conflict(f"namespace {namespace} belongs to a local publisher; choose another for the partner")
        record = SubscriptionRecord(
            name=name, url=url, namespace=namespace, ca_pem=body["ca_pem"], endorser_dn=body["endorser_dn"],
            endorser_ca=body.get("endorser_ca") or None, list_identifier=body.get("list_identifier") or None,
            selectors=parse_selectors(body.get("select") or {}),
            interval_seconds=int(body.get("interval_seconds", 300)),
            grace_seconds=int(body.get("grace_seconds", 3600)),
        )
        if record.interval_seconds < 1 or record.grace_seconds < 0:
            raise BadRequest("interval_seconds must be >= 1 and grace_seconds >= 0")
        await self.records.add(record)
        event(log, "subscription.added", subscription=name, url=url, namespace=namespace)
        return record

    async def remove(self, name: str) -> list[str]:
        """Unsubscribe: its mirrored images leave this catalogue's list at once."""
        async with self._lock(name):
            identifiers = await self.records.remove(name)
        follower = self._followers.pop(name, None)
        if follower is not None:
            follower.cancel()
        for identifier in identifiers:
            with contextlib.suppress(NotFound):
                await self.catalogue.withdraw(identifier, by=f"unsubscribed:{name}")
        event(log, "subscription.removed", subscription=name, revoked=len(identifiers))
        return identifiers

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    # --- one sync ---------------------------------------------------------------------------

    async def sync(self, name: str) -> SyncResult:
        async with self._lock(name):
            return await self._sync(await self.records.get(name))

    async def _fetch(self, record: SubscriptionRecord) -> tuple[bytes, str | None]:
        """The partner's signed list now, or the last good one (its bytes as fetched, to be
        verified again) if it is unchanged."""
        fetched = await fetch_signed_list(self.http, record.url, self.max_list_bytes,
                                          record.etag if record.signed_list is not None else None)
        if fetched.message is None and record.signed_list is not None:
            return record.signed_list, record.etag
        assert fetched.message is not None
        return fetched.message, fetched.etag

    async def _sync(self, record: SubscriptionRecord) -> SyncResult:
        result = SyncResult(record.name)
        now = utcnow()
        try:
            message, etag = await self._fetch(record)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            return await self._failed(record, result, "unreachable", f"partner unreachable: {exc}", now)
        except ListTooLarge as exc:  # refused before parsing or checking; the last good list stays
            return await self._failed(record, result, exc.code, f"list refused ({exc.code}): {exc}", now)
        subscription = Subscription(record.endorser_dn, record.endorser_ca, record.list_identifier)
        history = History(last_version=record.last_version, known_images=await self.records.seen(record.name))
        try:
            image_list = await verify_signed_list(message, record.ca_pem.encode(), subscription, history, now)
        except ImageListError as exc:
            return await self._failed(record, result, exc.code, f"list refused ({exc.code}): {exc}", now)
        result.list_version = image_list.version
        await self.records.record_accepted(record.name, image_list.identifier, image_list.version, etag, message,
                                           {i.identifier: i.sha512 for i in image_list.images}, now)
        wanted = [i for i in image_list.images if selected(i, record.selectors)]
        mirrored = await self.records.mirrored(record.name)
        for image in wanted:
            if image.identifier in mirrored:
                continue
            try:
                await self._import(record, image_list, image)
            except (MirrorError, Conflict) as exc:  # the next sync tries again (a cut transfer resumes)
                result.errors.append(str(exc))
                continue
            result.imported.append(image.identifier)
        await self._propagate_revocations(record, {i.identifier for i in wanted}, mirrored, now, result)
        if result.imported:
            await self.catalogue.changed()
        if result.errors:
            await self.records.record_failure(record.name, "; ".join(result.errors), now)
        event(log, "subscription.synced", subscription=record.name, list_version=image_list.version,
              imported=len(result.imported), revoked=len(result.revoked), errors=len(result.errors))
        self.catalogue.count_sync(record.name, "ok" if not result.errors else "image_errors")
        return result

    async def _failed(self, record: SubscriptionRecord, result: SyncResult, code: str, reason: str,
                      now: dt.datetime) -> SyncResult:
        """The list could not be had or was refused: the last good one stays in force."""
        await self.records.record_failure(record.name, reason, now)
        event(log, "subscription.failed", level=logging.WARNING, subscription=record.name, reason=reason,
              last_good_version=record.last_version)
        self.catalogue.count_sync(record.name, code)
        result.errors.append(reason)
        return result

    async def _import(self, record: SubscriptionRecord, image_list: ImageList, image: Image) -> None:
        local = await self.catalogue.find_image(image.identifier)
        if local is not None:
            if local.sha512 != image.sha512:
                raise Conflict(f"image {image.identifier}: this identifier is used here for other bytes; not imported")
            await self.records.add_mirrored(record.name, image.identifier)  # already here (same bytes)
            return
        with self.catalogue.blobs.pin(image.sha512):
            await self.mirror.fetch(image)
            stored_name = await self._record(record, image_list, image)
        await self.records.add_mirrored(record.name, image.identifier)
        event(log, "subscription.imported", subscription=record.name, image=image.identifier,
              namespace=record.namespace, name=stored_name, version=image.version, bytes=image.size)

    async def _record(self, record: SubscriptionRecord, image_list: ImageList, image: Image) -> str:
        """Add the mirrored image's record; returns the name it got (its own, or with the
        identifier appended if another image of the namespace has that name and version)."""
        name = _slug(str(image.extra.get(NAME) or image.title), "image")
        version = _slug(image.version, "1")
        metadata: dict[str, Any] = {
            "title": image.title, "description": image.description, "format": image.format,
            "compression": str(image.extra.get(EXT_COMPRESSION, "none")), "hypervisor": image.hypervisor,
            "os": image.os, "osversion": image.osversion, "arch": image.arch, "comments": image.comments,
            "ram_minimum": image.ram_minimum, "core_minimum": image.core_minimum,
            "extra": {k: v for k, v in image.extra.items() if not k.startswith("vmic:")},
            "provenance": {"endorser_dn": image_list.endorser.dn, "list_identifier": image_list.identifier,
                           "list_version": image_list.version, "uri": image.uri, "subscription": record.name},
        }
        for attempt_name in (name, f"{name}-{image.identifier[:8]}"):
            request = ImageRequest(namespace=record.namespace, name=attempt_name, version=version, size=image.size,
                                   sha512=image.sha512, identifier=image.identifier, metadata=metadata)
            image_record = ImageRecord(identifier=image.identifier, namespace=record.namespace, name=attempt_name,
                                       version=version, sha512=image.sha512, size=image.size,
                                       publisher=f"partner:{record.name}", created=utcnow(), expires=None,
                                       revoked=None, metadata=metadata)
            try:
                await self.catalogue.import_image(image_record, request)
                return attempt_name
            except Conflict:
                if attempt_name != name:
                    raise
        raise AssertionError("unreachable")

    async def _propagate_revocations(self, record: SubscriptionRecord, listed: set[str],
                                     mirrored: dict[str, dt.datetime | None], now: dt.datetime,
                                     result: SyncResult) -> None:
        for identifier, missing_since in mirrored.items():
            if identifier in listed:
                if missing_since is not None:
                    await self.records.set_missing(record.name, identifier, None)
                continue
            if missing_since is None:
                missing_since = now
                await self.records.set_missing(record.name, identifier, now)
            if now - missing_since >= dt.timedelta(seconds=record.grace_seconds):
                with contextlib.suppress(NotFound):
                    await self.catalogue.withdraw(identifier, by=f"partner:{record.name}")
                await self.records.drop_mirrored(record.name, identifier)
                result.revoked.append(identifier)

    # --- keeping in sync ---------------------------------------------------------------------

    async def sync_quietly(self, name: str) -> None:
        try:
            await self.sync(name)
        except NotFound:
            pass  # removed meanwhile
        except Exception:
            log.exception("subscription.sync_crashed", extra={"fields": {"subscription": name}})

    async def run(self, tick: float = 1.0) -> None:
        """Sync each subscription when due; follow each partner's event stream. A round whose
        schedule cannot be read (the database away for a moment) is logged and the next tick
        tries again: this loop must outlive any outage."""
        while True:
            try:
                await self._sync_due(utcnow())
            except Exception:
                log.exception("subscription.schedule_failed")
            await asyncio.sleep(tick)

    async def _sync_due(self, now: dt.datetime) -> None:
        for name, url, interval, last_attempt in await self.records.schedule():
            if last_attempt is None or (now - last_attempt).total_seconds() >= interval:
                await self.sync_quietly(name)
            if name not in self._followers and events_url(url):
                self._followers[name] = asyncio.create_task(self._follow(name, url))

    async def _follow(self, name: str, list_url: str) -> None:
        """Sync at once whenever the partner's ``/events`` stream announces a new list."""
        url = events_url(list_url)
        assert url is not None
        await watch_events(self.http, url, lambda: self.sync_quietly(name))
