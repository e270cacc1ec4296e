"""The catalogue as one object: store, blobs, uploads and the signed list, wired together.

:func:`open_catalogue` checks everything a running service needs *before* it listens
(signing key readable and matching, database reachable, data directory writable) and
recovers from a crash (sweeps half-done uploads, drops blobs nothing references).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509

from ..errors import ConfigError, Conflict, Forbidden, Gone, NotFound
from ..imagelist.smime import Signer
from ..log import event
from ..torrents import FORMATS as TORRENT_FORMATS
from ..torrents import make_torrent
from .blobs import BlobStore
from .config import CatalogueConfig, Publisher, hash_token, publisher_for_subject
from .db import connect
from .listing import ListSettings, ListSigner
from .metrics import Metrics
from .node_registry import NodeRegistry
from .store import ImageRecord, ImageRequest, MetadataStore
from .tls import server_context
from .uploads import UploadLimits, Uploads

log = logging.getLogger("vmic.catalogue")


@dataclass
class Catalogue:
    config: CatalogueConfig
    store: MetadataStore
    blobs: BlobStore
    uploads: Uploads
    listing: ListSigner
    #: node daemons heard of (preheat checks the names it is given)
    nodes: NodeRegistry
    metrics: Metrics = field(default_factory=Metrics)
    #: set when images may lack a torrent; the torrent maker (run_torrent_maker) clears it
    torrents_wanted: asyncio.Event = field(default_factory=asyncio.Event)

    def publisher(self, token: str) -> Publisher | None:
        digest = hash_token(token)
        found = None
        for publisher in self.config.publishers:
            if hmac.compare_digest(digest, publisher.token_sha256):
                found = publisher
        return found

    async def changed(self) -> None:
        """Images were added: re-sign the list now, make their torrents in the background."""
        await self.listing.refresh()
        self.torrents_wanted.set()

    async def make_missing_torrents(self) -> list[str]:
        """A torrent for every unrevoked image without one (hashing runs in an executor)."""
        have = await self.store.info_hashes()
        loop = asyncio.get_running_loop()
        made = []
        for record in await self.store.images():
            blob = self.blobs.path(record.sha512)
            if record.revoked is not None or record.identifier in have or not blob.is_file():
                continue
            torrent = await loop.run_in_executor(None, make_torrent, blob,
                                                 f"{self.config.url}/images/{record.identifier}",
                                                 self.config.tracker_urls, f"vmic image {record.identifier}",
                                                 self.config.torrent_format)
            await self.store.add_torrent(record.identifier, torrent.btih, torrent.btmh, torrent.data)
            event(log, "torrent.made", image=record.identifier, btih=torrent.btih, piece_size=torrent.piece_size)
            made.append(record.identifier)
        if made:
            await self.listing.refresh()
        return made

    async def run_collector(self, every: float = 600.0) -> None:
        """Remove the bytes of images revoked longer than ``revoke_grace`` ago."""
        while True:
            await asyncio.sleep(every)
            try:
                await self.collect_garbage()
            except Exception:  # e.g. the database away for a moment: the next round
                log.exception("garbage.failed")

    async def run_torrent_maker(self) -> None:
        while True:
            await self.torrents_wanted.wait()
            self.torrents_wanted.clear()
            try:
                await self.make_missing_torrents()
            except Exception:  # e.g. a blob revoked while being hashed: the next round sorts it out
                log.exception("torrent.failed")

    def publisher_by_certificate(self, subject: x509.Name) -> Publisher | None:
        """The publisher whose ``client_dn`` is this (already TLS-verified) subject, compared
        RDN by RDN (a value holding "/CN=carol" must not pass for carol)."""
        return publisher_for_subject(self.config.publishers, subject)

    async def revoke(self, publisher: Publisher, identifier: str) -> ImageRecord:
        record = await self.store.image(identifier)
        if record.namespace not in publisher.namespaces:
            raise Forbidden(f"publisher {publisher.name} may not revoke images in namespace {record.namespace}")
        return await self.withdraw(identifier, by=publisher.name)

    async def preheat(self, publisher: Publisher, identifier: str, target: dict[str, Any] | None) -> ImageRecord:
        """Sign a preheat target into the list (None cancels it): nodes follow at once."""
        record = await self.store.image(identifier)
        if record.namespace not in publisher.namespaces and not publisher.admin:
            raise Forbidden(f"publisher {publisher.name} may not preheat images in namespace {record.namespace}")
        if record.revoked is not None:
            raise Conflict(f"image {identifier} is revoked")
        record = await self.store.set_metadata(identifier, "preheat", target)
        await self.listing.refresh()
        event(log, "image.preheat", image=identifier, target=target, by=publisher.name)
        return record

    async def withdraw(self, identifier: str, by: str) -> ImageRecord:
        """Revoke an image version: out of the next list at once; its blob stays for
        ``revoke_grace`` (:meth:`restore`), then goes if nothing else uses it."""
        record = await self.store.revoke(identifier)
        await self.listing.refresh()
        await self.collect_garbage()
        event(log, "image.revoked", image=identifier, by=by, restorable_for=self.config.revoke_grace)
        return record

    async def restore(self, publisher: Publisher, identifier: str) -> ImageRecord:
        """A revoked image version back in the list, while its bytes are kept (``revoke_grace``)."""
        record = await self.store.image(identifier)
        if record.namespace not in publisher.namespaces:
            raise Forbidden(f"publisher {publisher.name} may not restore images in namespace {record.namespace}")
        if record.revoked is None:
            raise Conflict(f"image {identifier} is not revoked")
        until = record.revoked + dt.timedelta(seconds=self.config.revoke_grace)
        if until <= dt.datetime.now(dt.timezone.utc) or not self.blobs.path(record.sha512).is_file():
            raise Gone(f"image {identifier} was revoked at {record.revoked:%Y-%m-%dT%H:%M:%SZ}, more than "
                       f"revoke_grace ago: its bytes are gone; publish it again")
        record = await self.store.restore(identifier)
        await self.changed()
        event(log, "image.restored", image=identifier, by=publisher.name)
        return record

    async def collect_garbage(self) -> list[str]:
        """Remove blobs that no image references, unrevoked or revoked less than
        ``revoke_grace`` ago (pinned ones are being recorded)."""
        kept_since = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=self.config.revoke_grace)
        live = await self.store.live_sha512s(kept_since) | self.blobs.pinned
        removed = sorted(self.blobs.sha512s() - live)
        for sha512 in removed:
            self.blobs.remove(sha512)
            event(log, "blob.removed", sha512=sha512)
        return removed

    # --- what partner sync may do (vmic.sync.writer.CatalogueWriter) ------------------------

    def local_namespaces(self) -> set[str]:
        return {namespace for publisher in self.config.publishers for namespace in publisher.namespaces}

    async def find_image(self, identifier: str) -> ImageRecord | None:
        try:
            return await self.store.image(identifier)
        except NotFound:
            return None

    async def import_image(self, record: ImageRecord, request: ImageRequest) -> None:
        await self.store.insert_image(record, request)

    def count_sync(self, subscription: str, outcome: str) -> None:
        self.metrics.syncs.labels(subscription, outcome).inc()

    async def close(self) -> None:
        await self.store.close()


async def open_catalogue(config: CatalogueConfig) -> Catalogue:
    signer = Signer.load(config.cert_path, config.key_path)
    if config.torrent_format not in TORRENT_FORMATS:
        raise ConfigError(f"torrent_format must be one of {', '.join(TORRENT_FORMATS)}")
    server_context(config)  # unusable TLS settings stop the start here, in one line
    try:
        config.data_dir.mkdir(parents=True, exist_ok=True)
        blobs = BlobStore(config.data_dir)
    except OSError as exc:
        raise ConfigError(f"cannot use data directory {config.data_dir}: {exc.strerror}") from None
    store = MetadataStore(await connect(config.database or str(config.data_dir / "catalogue.sqlite"),
                                         config.database_password_file))
    await store.init()
    identifier = config.list_identifier or await store.setting("list_identifier", str(uuid.uuid4()))
    settings = ListSettings(
        identifier=identifier,
        title=config.list_title,
        description=config.list_description or config.list_title,  # never an empty dc:description
        url=config.url,
        email=config.endorser_email,
        lifetime=dt.timedelta(seconds=config.list_lifetime),
    )
    catalogue = Catalogue(
        config=config,
        store=store,
        blobs=blobs,
        uploads=Uploads(store, blobs, config.max_upload_bytes, UploadLimits(
            config.max_uploads_per_publisher, config.max_upload_bytes_per_publisher, config.free_space_reserve,
            dt.timedelta(seconds=config.upload_expiry))),
        listing=ListSigner(store, signer, settings),
        nodes=NodeRegistry(store.db),
    )
    await catalogue.nodes.init()
    await catalogue.uploads.recover()
    await catalogue.collect_garbage()
    await catalogue.listing.refresh()
    catalogue.torrents_wanted.set()  # images published before a crash may lack one
    return catalogue

