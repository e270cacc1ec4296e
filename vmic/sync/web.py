"""HTTP interface of partner sync (admin token, also to read):

    GET    /api/v1/subscriptions              status of every subscription (last error, version)
    POST   /api/v1/subscriptions              subscribe (JSON: url, ca_pem, endorser_dn, ...)
    DELETE /api/v1/subscriptions/<name>       unsubscribe (its mirrored images are revoked)
    POST   /api/v1/subscriptions/<name>/sync  sync now; answers with what it did
    GET    /partners/<name>/imagelist         the partner's last good signed list, verbatim
"""

from __future__ import annotations

from aiohttp import web

from ..catalogue.http import admin_of, catalogue_of
from ..catalogue.names import check_name
from ..errors import NotFound
from ..json_body import json_body


async def list_subscriptions(request: web.Request) -> web.Response:
    admin_of(request)  # partner URLs and their errors are the site's business
    records = await catalogue_of(request).syncer.records.all()
    return web.json_response([r.status_json() for r in records])


async def add_subscription(request: web.Request) -> web.Response:
    admin_of(request)
    body = await json_body(request)
    syncer = catalogue_of(request).syncer
    record = await syncer.add(body)
    result = await syncer.sync(record.name)  # the first sync at once: errors show straight away
    status = (await syncer.records.get(record.name)).status_json()
    return web.json_response({**status, "sync": result.to_json()}, status=201)


async def remove_subscription(request: web.Request) -> web.Response:
    admin_of(request)
    name = check_name(request.match_info["name"], "subscription name")
    revoked = await catalogue_of(request).syncer.remove(name)
    return web.json_response({"name": name, "revoked": revoked})


async def sync_now(request: web.Request) -> web.Response:
    admin_of(request)
    name = check_name(request.match_info["name"], "subscription name")
    result = await catalogue_of(request).syncer.sync(name)
    return web.json_response(result.to_json())


async def partner_list(request: web.Request) -> web.Response:
    name = check_name(request.match_info["name"], "subscription name")
    record = await catalogue_of(request).syncer.records.get(name)
    if record.signed_list is None:
        raise NotFound(f"no list from {name} was accepted yet")
    return web.Response(body=record.signed_list, content_type="text/plain",
                        headers={"ETag": f'"p{record.last_version}"'})


def add_routes(app: web.Application) -> None:
    app.add_routes([
        web.get("/api/v1/subscriptions", list_subscriptions),
        web.post("/api/v1/subscriptions", add_subscription),
        web.delete("/api/v1/subscriptions/{name}", remove_subscription),
        web.post("/api/v1/subscriptions/{name}/sync", sync_now),
        web.get("/partners/{name}/imagelist", partner_list),
    ])

