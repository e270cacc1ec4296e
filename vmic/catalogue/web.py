"""The catalogue's HTTP interface (aiohttp).

Public, read-only:

    GET  /                      HTML page of the current images
    GET  /imagelist             the signed HEPiX list (detached S/MIME), ETag / If-None-Match
    GET  /imagelist.json        the same list as plain JSON, for people
    GET  /images/<identifier>   an image's bytes, with HTTP Range (usable as a BEP 19 web seed)
    GET  /images/<identifier>.torrent    its torrent (made in the background after publication)
    GET  /api/v1/images[/<identifier>]   image records as JSON (revoked ones too)
    GET  /events                Server-Sent Events: ``imagelist`` at every signing
    GET  /metrics               Prometheus metrics
    GET  /healthz

Partner sync (:mod:`vmic.sync.web`): ``/api/v1/subscriptions`` and ``/partners/<name>/imagelist``.

Publishers (``Authorization: Bearer <token>``, or a TLS client certificate):

    POST   /api/v1/uploads               start an upload (see :mod:`.uploads`)
    HEAD   /api/v1/uploads/<id>          its offset
    PATCH  /api/v1/uploads/<id>          send bytes from Upload-Offset on (plain, or extents without zeros)
    DELETE /api/v1/uploads/<id>          abandon it
    DELETE /api/v1/images/<identifier>   revoke an image version (its bytes kept for revoke_grace)
    POST /api/v1/images/<identifier>/restore   a revoked version back in the list, within revoke_grace

Every error is a JSON body ``{"error": code, "message": text}`` with its HTTP status.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import aiohttp.http_exceptions
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..background import background_tasks
from ..errors import BadRequest, NotFound, VmicError, truncated
from ..extent_stream import MEDIA_TYPE as EXTENTS
from ..extent_stream import Decoder
from ..http_errors import errors_as_json
from ..json_body import BODY_TIMEOUT, body_seconds, json_body, runner_options
from ..preheat import node_from_user_agent
from ..sparse import Run
from ..sync.syncer import Syncer
from ..sync.web import sync_apps
from .names import check_identifier, check_sha512
from .page import render
from .preheat_routes import ROUTES as PREHEAT_ROUTES
from .readiness import readiness
from .request_context import CATALOGUE, catalogue_of, publisher_of
from .service import Catalogue
from .store import ImageRecord

log = logging.getLogger("vmic.catalogue.web")
OCTET_STREAM = "application/offset+octet-stream"

TUS_HEADERS = {"Tus-Resumable": "1.0.0"}
KEEPALIVE_SECONDS = 15.0
EVENT_STREAMS: web.AppKey[set[asyncio.Task[Any]]] = web.AppKey("event_streams", set)


def record_json(record: ImageRecord, base_url: str) -> dict[str, Any]:
    return {
        "identifier": record.identifier,
        "namespace": record.namespace,
        "name": record.name,
        "version": record.version,
        "sha512": record.sha512,
        "size": record.size,
        "publisher": record.publisher,
        "created": record.created.isoformat(),
        "expires": record.expires.isoformat() if record.expires else None,
        "revoked": record.revoked.isoformat() if record.revoked else None,
        "uri": f"{base_url}/images/{record.identifier}",
        **record.metadata,
    }


# --- public ------------------------------------------------------------------------------


def _conditional(request: web.Request, body: bytes, etag: str, content_type: str) -> web.Response:
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match and etag in [t.strip() for t in if_none_match.split(",")]:
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, content_type=content_type, headers=headers)


def note_node(request: web.Request) -> None:
    """A node daemon looking at the list says its name (vmic/catalogue/node_registry.py)."""
    name = node_from_user_agent(request.headers.get("User-Agent", ""))
    if name:
        catalogue_of(request).nodes.seen(name, request.remote or "")


async def signed_list(request: web.Request) -> web.Response:
    note_node(request)
    current = catalogue_of(request).listing.current
    return _conditional(request, current.signed, current.etag, "text/plain")


async def json_list(request: web.Request) -> web.Response:
    current = catalogue_of(request).listing.current
    return _conditional(request, current.content, current.etag.replace('"', '"j', 1), "application/json")


async def index(request: web.Request) -> web.Response:
    return web.Response(text=render(catalogue_of(request).listing.current.image_list), content_type="text/html")


async def image_blob(request: web.Request) -> web.StreamResponse:
    catalogue = catalogue_of(request)
    record = await catalogue.store.image(check_identifier(request.match_info["identifier"]))
    if record.revoked is not None:
        raise web.HTTPGone(text=f"image {record.identifier} was revoked")
    path = catalogue.blobs.path(record.sha512)
    if not path.is_file():
        raise NotFound(f"bytes of image {record.identifier} are not in the blob store")
    return web.FileResponse(path, headers={"Content-Type": "application/octet-stream"})


async def image_torrent(request: web.Request) -> web.Response:
    catalogue = catalogue_of(request)
    record = await catalogue.store.image(check_identifier(request.match_info["identifier"]))
    if record.revoked is not None:
        raise web.HTTPGone(text=f"image {record.identifier} was revoked")
    data = await catalogue.store.torrent(record.identifier)
    return web.Response(body=data, content_type="application/x-bittorrent", headers={
        "Content-Disposition": f'attachment; filename="{record.identifier}.torrent"'})


async def list_images(request: web.Request) -> web.Response:
    catalogue = catalogue_of(request)
    return web.json_response([record_json(r, catalogue.config.url) for r in await catalogue.store.images()])


async def show_image(request: web.Request) -> web.Response:
    catalogue = catalogue_of(request)
    record = await catalogue.store.image(check_identifier(request.match_info["identifier"]))
    return web.json_response(record_json(record, catalogue.config.url))


async def metrics(request: web.Request) -> web.Response:
    catalogue = catalogue_of(request)
    m = catalogue.metrics
    current = catalogue.listing.current.image_list
    m.list_version.set(current.version)
    m.images.set(len(current.images))
    m.list_expiry.set(current.expires.timestamp())
    m.endorser_expiry.set(catalogue.listing.signer.certificate.not_valid_after_utc.timestamp())
    used, on_disk = await asyncio.get_running_loop().run_in_executor(None, catalogue.blobs.usage)
    m.blob_bytes.set(used)
    m.blob_disk_bytes.set(on_disk)
    return web.Response(body=generate_latest(m.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def events(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: ``event: imagelist`` with the version and ETag at every signing
    (the current one first), so followers need not wait for a poll interval."""
    note_node(request)
    listing = catalogue_of(request).listing
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    streams = request.app[EVENT_STREAMS]
    task = asyncio.current_task()
    assert task is not None
    streams.add(task)  # ended by the app's shutdown, not waited for
    try:
        current = listing.current
        while True:
            info = json.dumps({"version": current.image_list.version, "etag": current.etag})
            await response.write(f"event: imagelist\nid: {current.image_list.version}\ndata: {info}\n\n".encode())
            while (newer := await listing.wait_newer(current.image_list.version, KEEPALIVE_SECONDS)) is None:
                await response.write(b": keep-alive\n\n")
            current = newer
    except (asyncio.CancelledError, ConnectionResetError):  # shutdown, or the follower went away
        return response
    finally:
        streams.discard(task)


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers (readiness is /readyz)."""
    return web.json_response({"status": "ok", "list_version": catalogue_of(request).listing.current.image_list.version})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: database, endorser certificate, list freshness; 503 with the failing checks."""
    catalogue = catalogue_of(request)
    try:
        async with asyncio.timeout(5):
            await catalogue.store.db.fetchone("SELECT 1 AS one")
        database_error = None
    except Exception as exc:  # whatever the database says: not ready, and why
        database_error = f"{type(exc).__name__}: {truncated(str(exc), 200)}"
    now = dt.datetime.now(dt.timezone.utc)
    current = catalogue.listing.current.image_list
    checks = readiness(now, database_error, catalogue.listing.signer.certificate.not_valid_after_utc,
                       current.expires, catalogue.listing.settings.lifetime, catalogue.config.ready_cert_days)
    ready = all(c.ok for c in checks)
    return web.json_response({"status": "ready" if ready else "not_ready", "checks": [c.to_json() for c in checks]},
                             status=200 if ready else 503)


# --- publishers ---------------------------------------------------------------------------


async def upload_options(request: web.Request) -> web.Response:
    return web.Response(status=204, headers={
        **TUS_HEADERS, "Tus-Version": "1.0.0", "Tus-Extension": "creation,termination",
        "Tus-Max-Size": str(catalogue_of(request).config.max_upload_bytes),
    })


async def start_upload(request: web.Request) -> web.Response:
    publisher = publisher_of(request)
    body = await json_body(request)
    record = await catalogue_of(request).uploads.start(publisher, body)
    location = f"/api/v1/uploads/{record.id}"
    return web.json_response(
        {"id": record.id, "location": location, "offset": 0, "length": record.length},
        status=201,
        headers={**TUS_HEADERS, "Location": location, "Upload-Offset": "0", "Upload-Length": str(record.length)},
    )


async def list_uploads(request: web.Request) -> web.Response:
    """The publisher's open uploads (an admin's: everyone's), with offsets and expiry."""
    publisher = publisher_of(request)
    views = await catalogue_of(request).uploads.views(None if publisher.admin else publisher)
    return web.json_response([v.to_json() for v in views])


async def upload_status(request: web.Request) -> web.Response:
    record, offset = await catalogue_of(request).uploads.owned(publisher_of(request), request.match_info["upload_id"])
    headers = {**TUS_HEADERS, "Upload-Offset": str(offset), "Upload-Length": str(record.length),
               "Cache-Control": "no-store"}
    if request.method == "HEAD":
        return web.Response(status=200, headers=headers)
    return web.json_response({"id": record.id, "offset": offset, "length": record.length}, headers=headers)


async def _body_chunks(request: web.Request) -> AsyncIterator[bytes]:
    """The request body as it arrives; a dropped connection, or one that sends nothing for
    the body timeout, just ends it early (tus: what arrived is kept, the client resumes)."""
    seconds = body_seconds(request)
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, aiohttp.ClientPayloadError,
                             aiohttp.http_exceptions.HttpProcessingError, TimeoutError):
        while True:
            async with asyncio.timeout(seconds):
                chunk = await request.content.readany()
            if not chunk:
                return
            yield chunk


async def _decoded(chunks: AsyncIterator[bytes], decoder: Decoder) -> AsyncIterator[Run]:
    async for chunk in chunks:
        for run in decoder.feed(chunk):
            yield run


async def patch_upload(request: web.Request) -> web.Response:
    """Bytes of an upload: plain (tus), or as extents that leave zeros out."""
    catalogue = catalogue_of(request)
    m = catalogue.metrics
    publisher = publisher_of(request)
    media_type = request.headers.get("Content-Type")
    if media_type not in (OCTET_STREAM, EXTENTS):
        raise web.HTTPUnsupportedMediaType(text=f"PATCH needs Content-Type: {OCTET_STREAM} (or {EXTENTS})")
    try:
        offset = int(request.headers["Upload-Offset"])
    except (KeyError, ValueError):
        raise BadRequest("PATCH needs an Upload-Offset header with a whole number") from None
    claimed = request.headers.get("Upload-Sha512")
    upload_id = request.match_info["upload_id"]
    body: AsyncIterator[Run] = _body_chunks(request)
    decoder = None
    if media_type == EXTENTS:
        decoder = Decoder()
        body = _decoded(_body_chunks(request), decoder)
    try:
        result = await catalogue.uploads.patch(publisher, upload_id, offset, body,
                                               check_sha512(claimed) if claimed is not None else None)
    except VmicError as exc:
        if exc.status in (413, 422):
            m.uploads.labels(exc.code).inc()
        raise
    finally:
        m.upload_body_bytes.inc(decoder.received if decoder is not None else 0)
    if decoder is None:
        m.upload_body_bytes.inc(result.offset - offset)
    m.upload_bytes.inc(result.offset - offset)
    headers = {**TUS_HEADERS, "Upload-Offset": str(result.offset)}
    if result.image is None:
        return web.Response(status=204, headers=headers)
    m.uploads.labels("published").inc()
    await catalogue.changed()
    return web.json_response(record_json(result.image, catalogue.config.url), status=201,
                             headers={**headers, "Location": f"/api/v1/images/{result.image.identifier}"})


async def delete_upload(request: web.Request) -> web.Response:
    await catalogue_of(request).uploads.abort(publisher_of(request), request.match_info["upload_id"])
    return web.Response(status=204, headers=TUS_HEADERS)


async def revoke_image(request: web.Request) -> web.Response:
    catalogue = catalogue_of(request)
    record = await catalogue.revoke(publisher_of(request), check_identifier(request.match_info["identifier"]))
    return web.json_response(record_json(record, catalogue.config.url))


async def restore_image(request: web.Request) -> web.Response:
    """A revoked image version back in the list, within ``revoke_grace`` (else 410)."""
    catalogue = catalogue_of(request)
    record = await catalogue.restore(publisher_of(request), check_identifier(request.match_info["identifier"]))
    return web.json_response(record_json(record, catalogue.config.url))


#: the server's read buffer: large, so multi-GB uploads arrive in few, big chunks
READ_BUFSIZE = 4 * 2**20


def make_runner(catalogue: Catalogue, syncer: Syncer, **kwargs: Any) -> web.AppRunner:
    """An AppRunner for the catalogue app, with buffers sized for image uploads."""
    kwargs.setdefault("shutdown_timeout", 5.0)  # open event streams must not hold a shutdown for long
    kwargs = {**runner_options(catalogue.config.header_timeout), **kwargs}
    return web.AppRunner(make_app(catalogue, syncer), read_bufsize=READ_BUFSIZE, **kwargs)


def make_app(catalogue: Catalogue, syncer: Syncer) -> web.Application:
    app = web.Application(middlewares=[catalogue.metrics.http.middleware(), errors_as_json(log, "catalogue")])
    app[CATALOGUE] = catalogue
    app[BODY_TIMEOUT] = catalogue.config.body_timeout
    app.add_routes(PREHEAT_ROUTES)
    app.add_routes([
        web.get("/", index),
        web.get("/imagelist", signed_list),
        web.get("/imagelist.json", json_list),
        web.get("/images/{identifier}.torrent", image_torrent),
        web.get("/images/{identifier}", image_blob),
        web.get("/api/v1/images", list_images),
        web.get("/api/v1/images/{identifier}", show_image),
        web.delete("/api/v1/images/{identifier}", revoke_image),
        web.post("/api/v1/images/{identifier}/restore", restore_image),
        web.options("/api/v1/uploads", upload_options),
        web.post("/api/v1/uploads", start_upload),
        web.get("/api/v1/uploads", list_uploads),
        web.get("/api/v1/uploads/{upload_id}", upload_status),
        web.patch("/api/v1/uploads/{upload_id}", patch_upload),
        web.delete("/api/v1/uploads/{upload_id}", delete_upload),
        web.get("/events", events),
        web.get("/metrics", metrics),
        web.get("/healthz", healthz),
        web.get("/readyz", readyz),
    ])
    for prefix, subapp in sync_apps(syncer):
        app.add_subapp(prefix, subapp)
    app[EVENT_STREAMS] = set()

    async def end_event_streams(app: web.Application) -> None:
        streams: set[asyncio.Task[Any]] = app[EVENT_STREAMS]
        for task in list(streams):
            task.cancel()

    app.on_shutdown.append(end_event_streams)

    app.cleanup_ctx.append(background_tasks(catalogue.listing.run, syncer.run,
                                            catalogue.run_torrent_maker, catalogue.uploads.run_expiry,
                                            catalogue.run_collector, catalogue.nodes.run))
    return app
