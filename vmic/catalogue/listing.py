"""Builds, signs and caches the catalogue's HEPiX image list.

The list is signed once per change, never per request: :meth:`ListSigner.refresh`
re-signs only when the set of current images differs from the signed one, or when
half of the list's lifetime has passed (so subscribers never see it expire while the
catalogue runs). Each signing takes a new, higher ``hv:version``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
from dataclasses import dataclass
from typing import Any

from ..imagelist import extensions
from ..imagelist.model import (
    EXT_COMPRESSION,
    EXT_CREATED,
    EXT_EXPIRES,
    EXT_PUBLISHER,
    Endorser,
    Image,
    ImageList,
    format_date,
)
from ..imagelist.smime import Signer
from ..log import event
from ..preheat import EXTENSION as PREHEAT
from .store import ImageRecord, MetadataStore, utcnow

log = logging.getLogger("vmic.catalogue.listing")

EXT_NAMESPACE = extensions.NAMESPACE
EXT_NAME = extensions.NAME
EXT_BTIH = extensions.BTIH
EXT_BTMH = extensions.BTMH
EXT_TORRENT = extensions.TORRENT
#: list-level: this catalogue makes a torrent for every image (an image without one yet
#: gets it within seconds; nodes wait for it rather than all fetching over HTTP at once)
EXT_LIST_TORRENTS = extensions.TORRENTS


@dataclass(frozen=True)
class SignedList:
    image_list: ImageList
    content: bytes  #: canonical JSON, exactly what the signature covers
    signed: bytes  #: detached S/MIME message
    etag: str


@dataclass(frozen=True)
class ListSettings:
    identifier: str
    title: str
    description: str
    url: str
    email: str
    lifetime: dt.timedelta


def image_entry(record: ImageRecord, base_url: str, info_hashes: tuple[str, str | None] | None = None) -> Image:
    meta = record.metadata
    extra: dict[str, Any] = dict(meta.get("extra", {}))  # a partner's own extension fields, kept
    for key, value in meta.get("provenance", {}).items():
        extra[f"vmic:source:{key}"] = value
    extra |= {
        EXT_NAMESPACE: record.namespace,
        EXT_NAME: record.name,
        EXT_PUBLISHER: record.publisher,
        EXT_COMPRESSION: meta.get("compression", "none"),
        EXT_CREATED: format_date(record.created),
    }
    if record.expires is not None:
        extra[EXT_EXPIRES] = format_date(record.expires)
    if meta.get("preheat"):
        extra[PREHEAT] = meta["preheat"]
    if info_hashes is not None:
        extra[EXT_BTIH] = info_hashes[0]
        if info_hashes[1] is not None:
            extra[EXT_BTMH] = info_hashes[1]
        extra[EXT_TORRENT] = f"{base_url}/images/{record.identifier}.torrent"
    title = meta.get("title") or f"{record.namespace}/{record.name}"
    return Image(
        identifier=record.identifier,
        uri=f"{base_url}/images/{record.identifier}",
        size=record.size,
        sha512=record.sha512,
        version=record.version,
        title=title,
        # never empty: hepixvmitrust's publisher-side check refuses a list with an empty
        # dc:description or sl:comments, so both default from the title
        description=meta.get("description") or title,
        hypervisor=meta.get("hypervisor", "QEMU,KVM"),
        format=meta.get("format", "raw"),
        os=meta.get("os", ""),
        osversion=meta.get("osversion", ""),
        arch=meta.get("arch", "x86_64"),
        comments=meta.get("comments") or f"{title} {record.version}",
        ram_minimum=int(meta.get("ram_minimum", 0)),
        core_minimum=int(meta.get("core_minimum", 0)),
        extra=extra,
    )


class ListSigner:
    def __init__(self, store: MetadataStore, signer: Signer, settings: ListSettings) -> None:
        self.store = store
        self.signer = signer
        self.settings = settings
        self._current: SignedList | None = None
        self._lock = asyncio.Lock()
        self._signed = asyncio.Event()  #: set, then replaced, at every signing

    @property
    def current(self) -> SignedList:
        assert self._current is not None, "refresh() first"
        return self._current

    def _stale(self, images: tuple[Image, ...], now: dt.datetime) -> bool:
        if self._current is None:
            return True
        signed = self._current.image_list
        return images != signed.images or now >= signed.created + self.settings.lifetime / 2

    async def refresh(self) -> SignedList:
        """Re-sign if the current images changed or the list is half-way to expiry."""
        async with self._lock:
            now = utcnow()
            records = [r for r in await self.store.images() if r.current(now)]
            hashes = await self.store.info_hashes()
            images = tuple(image_entry(r, self.settings.url, hashes.get(r.identifier)) for r in records)
            if not self._stale(images, now):
                return self.current
            version = await self.store.bump_list_version()
            now = now.replace(microsecond=0)  # as written in the list
            image_list = ImageList(
                identifier=self.settings.identifier,
                version=version,
                created=now,
                expires=now + self.settings.lifetime,
                endorser=Endorser(self.signer.dn, self.signer.ca, self.settings.email, self.settings.title),
                images=images,
                title=self.settings.title,
                description=self.settings.description,
                source=self.settings.url,
                uri=f"{self.settings.url}/imagelist",
                extra={EXT_LIST_TORRENTS: True},
            )
            self._current = await asyncio.get_running_loop().run_in_executor(None, self._sign, image_list)
            event(log, "imagelist.signed", version=version, images=len(images),
                  expires=format_date(image_list.expires))
            self._signed.set()
            self._signed = asyncio.Event()
            return self._current

    async def wait_newer(self, version: int, timeout: float) -> SignedList | None:
        """The current list once its version is above ``version``; None after ``timeout``."""
        signed = self._signed
        if self.current.image_list.version > version:
            return self.current
        try:
            await asyncio.wait_for(signed.wait(), timeout)
        except asyncio.TimeoutError:
            return None
        return self.current

    def _sign(self, image_list: ImageList) -> SignedList:
        content = image_list.to_bytes()
        signed = self.signer.sign(content)
        return SignedList(image_list, content, signed, '"' + hashlib.sha256(signed).hexdigest()[:32] + '"')

    def next_deadline(self, records: list[ImageRecord], now: dt.datetime) -> float:
        """Seconds until the list must be looked at again (renewal, or an image expiring)."""
        renew = self.current.image_list.created + self.settings.lifetime / 2
        expiries = [r.expires for r in records if r.expires is not None and r.expires > now]
        deadline = min([renew, *expiries])
        return max(1.0, (deadline - now).total_seconds())

    async def run(self, retry: float = 10.0) -> None:
        """Keep the list fresh: re-sign before expiry, drop images when they expire. A round
        that fails (the database away for a moment) is logged and tried again ``retry``
        seconds later: this loop must outlive any outage, or the list would expire."""
        while True:
            try:
                delay = self.next_deadline(await self.store.images(), utcnow())
            except Exception:
                log.exception("imagelist.schedule_failed")
                delay = retry
            await asyncio.sleep(min(delay, 60.0))
            try:
                await self.refresh()
            except Exception:  # keep serving the last good list; say why
                log.exception("imagelist.refresh_failed")
