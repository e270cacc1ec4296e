"""The catalogue's preheat routes (the target rules: :mod:`vmic.preheat`).

    POST /api/v1/images/<identifier>/preheat[?force=true]   sign a target into the list
    GET  /api/v1/images/<identifier>/preheat                 the target, and progress per node

Named nodes must be known: each must have looked at this catalogue's list (node daemons
say their name when they do: :mod:`vmic.catalogue.node_registry`), else 400 with the
unknown names, so that a typo never waits silently for a node that does not exist.
``force=true`` names nodes not seen yet (a hypervisor being commissioned).
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from aiohttp import web

from ..bittorrent.tracker_api import fetch_swarm, swarm_url
from ..errors import BadRequest, VmicError
from ..follow import follower_session
from ..json_body import json_body
from ..preheat import parse_target
from .names import check_identifier
from .request_context import catalogue_of, publisher_of
from .service import Catalogue

TRACKER_TIMEOUT = aiohttp.ClientTimeout(total=10)


def _tracker_session(catalogue: Catalogue) -> aiohttp.ClientSession:
    return follower_session([catalogue.config.tls_ca], TRACKER_TIMEOUT)  # one short deadline: a user waits


async def check_node_names(catalogue: Catalogue, names: list[str]) -> None:
    """BadRequest naming the nodes that never looked at this catalogue's list."""
    unknown = await catalogue.nodes.unknown(names)
    if unknown:
        shown = ", ".join(unknown[:10]) + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
        raise BadRequest(f"unknown node(s) {shown}: no node daemon of that name has looked at this catalogue "
                         "(a typo? pass force to name nodes not seen yet)")


async def set_preheat(request: web.Request) -> web.Response:
    """Sign a preheat target into the list: ``{"all": true}``, ``{"share": 0.25}``,
    ``{"nodes": [...]}``, or ``{}`` to cancel. The image's publisher, or an admin."""
    catalogue = catalogue_of(request)
    publisher = publisher_of(request)
    identifier = check_identifier(request.match_info["identifier"])
    target = parse_target(await json_body(request))
    if target is not None and "nodes" in target and request.query.get("force") not in ("1", "true", "yes"):
        await check_node_names(catalogue, target["nodes"])
    record = await catalogue.preheat(publisher, identifier, target)
    return web.json_response({"identifier": record.identifier, "preheat": record.metadata.get("preheat")})


async def preheat_status(request: web.Request) -> web.Response:
    """The image's preheat target and, from the tracker, every node in its swarm with its
    progress; named target nodes not seen yet are listed as missing."""
    catalogue = catalogue_of(request)
    identifier = check_identifier(request.match_info["identifier"])
    record = await catalogue.store.image(identifier)
    target = record.metadata.get("preheat")
    hashes = (await catalogue.store.info_hashes()).get(identifier)
    nodes: list[dict[str, Any]] = []
    body: dict[str, Any] = {"identifier": identifier, "preheat": target, "btih": hashes[0] if hashes else None,
            "nodes": [], "missing": [], "tracker_error": None}
    url = swarm_url(catalogue.config.tracker_urls, hashes[0]) if hashes else None
    if url is not None:
        try:
            async with _tracker_session(catalogue) as session:
                swarm = await fetch_swarm(session, url)
            body["nodes"] = nodes = [p.to_json() for p in swarm.peers if p.name]
        except (aiohttp.ClientError, asyncio.TimeoutError, VmicError) as exc:
            body["tracker_error"] = f"{url}: {exc or type(exc).__name__}"
    if target and "nodes" in target:
        seen = {p["name"] for p in nodes}
        body["missing"] = [n for n in target["nodes"] if n not in seen]
    return web.json_response(body)


ROUTES = [
    web.post("/api/v1/images/{identifier}/preheat", set_preheat),
    web.get("/api/v1/images/{identifier}/preheat", preheat_status),
]
