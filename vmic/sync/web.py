"""HTTP interface of partner sync (admin token, also to read), as two aiohttp sub-apps
the catalogue's application mounts (:func:`sync_apps`):

    GET    /api/v1/subscriptions              status of every subscription (last error, version)
    POST   /api/v1/subscriptions              subscribe (JSON: url, ca_pem, endorser_dn, ...)
    DELETE /api/v1/subscriptions/<name>       unsubscribe (its mirrored images are revoked)
    POST   /api/v1/subscriptions/<name>/sync  sync now; answers with what it did
    GET    /partners/<name>/imagelist         the partner's last good signed list, verbatim
"""

from __future__ import annotations

from aiohttp import web

from ..catalogue.names import check_name
from ..catalogue.request_context import admin_of
from ..errors import NotFound
from ..json_body import json_body
from .syncer import Syncer

SYNCER = web.AppKey("syncer", Syncer)


def syncer_of(request: web.Request) -> Syncer:
    return request.app[SYNCER]


async def list_subscriptions(request: web.Request) -> web.Response:
    admin_of(request)  # partner URLs and their errors are the site's business
    records = await syncer_of(request).records.all()
    return web.json_response([r.status_json() for r in records])


async def add_subscription(request: web.Request) -> web.Response:
    admin_of(request)
    body = await json_body(request)
    syncer = syncer_of(request)
    record = await syncer.add(body)
    result = await syncer.sync(record.name)  # the first sync at once: errors show straight away
    status = (await syncer.records.get(record.name)).status_json()
    return web.json_response({**status, "sync": result.to_json()}, status=201)


async def remove_subscription(request: web.Request) -> web.Response:
    admin_of(request)
    name = check_name(request.match_info["name"], "subscription name")
    revoked = await syncer_of(request).remove(name)
    return web.json_response({"name": name, "revoked": revoked})


async def sync_now(request: web.Request) -> web.Response:
    admin_of(request)
    name = check_name(request.match_info["name"], "subscription name")
    result = await syncer_of(request).sync(name)
    return web.json_response(result.to_json())


async def partner_list(request: web.Request) -> web.Response:
    name = check_name(request.match_info["name"], "subscription name")
    record = await syncer_of(request).records.get(name)
    if record.signed_list is None:
        raise NotFound(f"no list from {name} was accepted yet")
    return web.Response(body=record.signed_list, content_type="text/plain",
                        headers={"ETag": f'"p{record.last_version}"'})


def sync_apps(syncer: Syncer) -> list[tuple[str, web.Application]]:
    """(prefix, sub-app) pairs: the subscriptions API, and the partners' lists."""
    api = web.Application()
    api[SYNCER] = syncer
    api.add_routes([
        web.get("", list_subscriptions),
        web.post("", add_subscription),
        web.delete("/{name}", remove_subscription),
        web.post("/{name}/sync", sync_now),
    ])
    partners = web.Application()
    partners[SYNCER] = syncer
    partners.add_routes([web.get("/{name}/imagelist", partner_list)])
    return [("/api/v1/subscriptions", api), ("/partners", partners)]

