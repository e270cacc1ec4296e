"""The catalogue's HTTP interface (aiohttp).

Public, read-only:

    GET  /                      HTML page of the current images
    GET  /imagelist             the signed HEPiX list (detached S/MIME), ETag / If-None-Match
    GET  /imagelist.json        the same list as plain JSON, for people
    GET  /images/<identifier>   an image's bytes, with HTTP Range (usable as a BEP 19 web seed)
    GET  /api/v1/images[/<identifier>]   image records as JSON (revoked ones too)
    GET  /metrics               Prometheus metrics
    GET  /healthz

Publishers (``Authorization: Bearer <token>``):

    POST   /api/v1/uploads               start an upload (see :mod:`.uploads`)
    HEAD   /api/v1/uploads/<id>          its offset
    PATCH  /api/v1/uploads/<id>          send bytes from Upload-Offset on
    DELETE /api/v1/uploads/<id>          abandon it
    DELETE /api/v1/images/<identifier>   revoke an image version

Every error is a JSON body ``{"error": code, "message": text}`` with its HTTP status.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST

from ..errors import BadRequest, NotFound, Unauthorized, VmicError
from .config import Publisher
from .names import check_identifier
from .page import render
from .service import Catalogue
from .store import ImageRecord

log = logging.getLogger("vmic.catalogue.web")

TUS_HEADERS = {"Tus-Resumable": "1.0.0"}


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("vmic_catalogue_http_requests", "HTTP requests", ["route", "status"],
                                registry=self.registry)
        self.uploads = Counter("vmic_catalogue_uploads", "Finished uploads by result", ["result"],
                               registry=self.registry)
        self.upload_bytes = Counter("vmic_catalogue_upload_bytes", "Image bytes received", registry=self.registry)
        self.list_version = Gauge("vmic_catalogue_imagelist_version", "hv:version of the signed list",
                                  registry=self.registry)
        self.images = Gauge("vmic_catalogue_images", "Images in the current list", registry=self.registry)
        self.blob_bytes = Gauge("vmic_catalogue_blob_store_bytes", "Bytes in the blob store",
                                registry=self.registry)
        self._request_counters: dict[tuple[str, int], Any] = {}

    def count_request(self, route: str, status: int) -> None:
        """Count one request (labelled children are cached: this runs on every request)."""
        counter = self._request_counters.get((route, status))
        if counter is None:
            counter = self._request_counters[(route, status)] = self.requests.labels(route, str(status))
        counter.inc()


CATALOGUE = web.AppKey("catalogue", Catalogue)
METRICS = web.AppKey("metrics", Metrics)


def error_response(error: VmicError, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(error.to_json(), status=error.status, headers=headers)


@web.middleware
async def errors_as_json(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
    metrics = request.app[METRICS]
    try:
        response = await handler(request)
    except VmicError as exc:
        headers = {"WWW-Authenticate": 'Bearer realm="vmic"'} if isinstance(exc, Unauthorized) else None
        response = error_response(exc, headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = web.json_response(
            {"error": exc.reason.lower().replace(" ", "_"), "message": exc.text or exc.reason},
            status=exc.status, headers={k: v for k, v in exc.headers.items() if k.lower() == "allow"},
        )
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        log.exception("http.internal_error", extra={"fields": {"path": request.path}})
        response = web.json_response({"error": "internal_error", "message": "internal error (see the service log)"},
                                     status=500)
    metrics.count_request(route, response.status)
    return response


def _catalogue(request: web.Request) -> Catalogue:
    return request.app[CATALOGUE]


def _publisher(request: web.Request) -> Publisher:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("this needs a publisher token: Authorization: Bearer <token>")
    publisher = _catalogue(request).publisher(token.strip())
    if publisher is None:
        raise Unauthorized("unknown or revoked publisher token")
    return publisher


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


async def signed_list(request: web.Request) -> web.Response:
    current = _catalogue(request).listing.current
    return _conditional(request, current.signed, current.etag, "text/plain")


async def json_list(request: web.Request) -> web.Response:
    current = _catalogue(request).listing.current
    return _conditional(request, current.content, current.etag.replace('"', '"j', 1), "application/json")


async def index(request: web.Request) -> web.Response:
    return web.Response(text=render(_catalogue(request).listing.current.image_list), content_type="text/html")


async def image_blob(request: web.Request) -> web.StreamResponse:
    catalogue = _catalogue(request)
    record = await catalogue.store.image(check_identifier(request.match_info["identifier"]))
    if record.revoked is not None:
        raise web.HTTPGone(text=f"image {record.identifier} was revoked")
    path = catalogue.blobs.path(record.sha512)
    if not path.is_file():
        raise NotFound(f"bytes of image {record.identifier} are not in the blob store")
    return web.FileResponse(path, headers={"Content-Type": "application/octet-stream"})


async def list_images(request: web.Request) -> web.Response:
    catalogue = _catalogue(request)
    return web.json_response([record_json(r, catalogue.config.url) for r in await catalogue.store.images()])


async def show_image(request: web.Request) -> web.Response:
    catalogue = _catalogue(request)
    record = await catalogue.store.image(check_identifier(request.match_info["identifier"]))
    return web.json_response(record_json(record, catalogue.config.url))


async def metrics(request: web.Request) -> web.Response:
    catalogue, m = _catalogue(request), request.app[METRICS]
    current = catalogue.listing.current.image_list
    m.list_version.set(current.version)
    m.images.set(len(current.images))
    m.blob_bytes.set(await asyncio.get_running_loop().run_in_executor(None, catalogue.blobs.used_bytes))
    return web.Response(body=generate_latest(m.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "list_version": _catalogue(request).listing.current.image_list.version})


# --- publishers ---------------------------------------------------------------------------


async def upload_options(request: web.Request) -> web.Response:
    return web.Response(status=204, headers={
        **TUS_HEADERS, "Tus-Version": "1.0.0", "Tus-Extension": "creation,termination",
        "Tus-Max-Size": str(_catalogue(request).config.max_upload_bytes),
    })


async def start_upload(request: web.Request) -> web.Response:
    publisher = _publisher(request)
    try:
        body = await request.json()
    except ValueError:
        raise BadRequest("the body must be JSON") from None
    record = await _catalogue(request).uploads.start(publisher, body)
    location = f"/api/v1/uploads/{record.id}"
    return web.json_response(
        {"id": record.id, "location": location, "offset": 0, "length": record.length},
        status=201,
        headers={**TUS_HEADERS, "Location": location, "Upload-Offset": "0", "Upload-Length": str(record.length)},
    )


async def upload_status(request: web.Request) -> web.Response:
    record, offset = await _catalogue(request).uploads.owned(_publisher(request), request.match_info["upload_id"])
    headers = {**TUS_HEADERS, "Upload-Offset": str(offset), "Upload-Length": str(record.length),
               "Cache-Control": "no-store"}
    if request.method == "HEAD":
        return web.Response(status=200, headers=headers)
    return web.json_response({"id": record.id, "offset": offset, "length": record.length}, headers=headers)


async def _body_chunks(request: web.Request) -> AsyncIterator[bytes]:
    """The request body as it arrives; a dropped connection just ends it early."""
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, Exception):
        async for chunk in request.content.iter_any():
            yield chunk


async def patch_upload(request: web.Request) -> web.Response:
    catalogue, m = _catalogue(request), request.app[METRICS]
    publisher = _publisher(request)
    if request.headers.get("Content-Type") != "application/offset+octet-stream":
        raise web.HTTPUnsupportedMediaType(text="PATCH needs Content-Type: application/offset+octet-stream")
    try:
        offset = int(request.headers["Upload-Offset"])
    except (KeyError, ValueError):
        raise BadRequest("PATCH needs an Upload-Offset header with a whole number") from None
    upload_id = request.match_info["upload_id"]
    try:
        result = await catalogue.uploads.patch(publisher, upload_id, offset, _body_chunks(request))
    except VmicError as exc:
        if exc.status in (413, 422):
            m.uploads.labels(exc.code).inc()
        raise
    m.upload_bytes.inc(result.offset - offset)
    headers = {**TUS_HEADERS, "Upload-Offset": str(result.offset)}
    if result.image is None:
        return web.Response(status=204, headers=headers)
    m.uploads.labels("published").inc()
    await catalogue.listing.refresh()
    return web.json_response(record_json(result.image, catalogue.config.url), status=201,
                             headers={**headers, "Location": f"/api/v1/images/{result.image.identifier}"})


async def delete_upload(request: web.Request) -> web.Response:
    await _catalogue(request).uploads.abort(_publisher(request), request.match_info["upload_id"])
    return web.Response(status=204, headers=TUS_HEADERS)


async def revoke_image(request: web.Request) -> web.Response:
    catalogue = _catalogue(request)
    record = await catalogue.revoke(_publisher(request), check_identifier(request.match_info["identifier"]))
    return web.json_response(record_json(record, catalogue.config.url))


#: the server's read buffer: large, so multi-GB uploads arrive in few, big chunks
READ_BUFSIZE = 4 * 2**20


def make_runner(catalogue: Catalogue, **kwargs: Any) -> web.AppRunner:
    """An AppRunner for the catalogue app, with buffers sized for image uploads."""
    return web.AppRunner(make_app(catalogue), read_bufsize=READ_BUFSIZE, **kwargs)


def make_app(catalogue: Catalogue) -> web.Application:
    app = web.Application(middlewares=[errors_as_json])
    app[CATALOGUE] = catalogue
    app[METRICS] = Metrics()
    app.add_routes([
        web.get("/", index),
        web.get("/imagelist", signed_list),
        web.get("/imagelist.json", json_list),
        web.get("/images/{identifier}", image_blob),
        web.get("/api/v1/images", list_images),
        web.get("/api/v1/images/{identifier}", show_image),
        web.delete("/api/v1/images/{identifier}", revoke_image),
        web.options("/api/v1/uploads", upload_options),
        web.post("/api/v1/uploads", start_upload),
        web.get("/api/v1/uploads/{upload_id}", upload_status),
        web.patch("/api/v1/uploads/{upload_id}", patch_upload),
        web.delete("/api/v1/uploads/{upload_id}", delete_upload),
        web.get("/metrics", metrics),
        web.get("/healthz", healthz),
    ])

    async def background(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(catalogue.listing.run())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.cleanup_ctx.append(background)
    return app
