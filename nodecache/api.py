"""The node daemon's local API: aiohttp on a Unix socket (mode 0660: root and the
socket's group only), what the ``nodecache`` CLI and the provisioning shim call.

    GET    /status            lists in force (or why refused), images, jobs, cache fill
    GET    /healthz           200 while the daemon answers (liveness)
    GET    /readyz            200 when every catalogue has a verified, unexpired list in force, else 503
    POST   /ensure            {"image": id-or-name}: staged base; streams NDJSON progress
    POST   /evict             {"image": ...}: 409 if a VM uses it
    POST   /gc                evict revoked/expired, then LRU above the high watermark
    POST   /refresh           look at every catalogue's list now
    POST   /refs              {"image", "holder", "disk"}: a VM uses a base
    DELETE /refs/{holder}
    GET    /metrics           Prometheus (also on ``metrics_listen`` over TCP, if set)

    POST   /vms               create and start a VM (the provisioning shim); streams NDJSON
    GET    /vms               every VM; GET /vms/{name} one
    POST   /vms/{name}/start  POST /vms/{name}/stop   DELETE /vms/{name}
    POST   /vms/rebase        repoint overlays after the cache directory moved
    POST   /vms/reap          destroy the VMs whose time to live is over (also every minute)

Errors are JSON bodies ``{"error": code, "message": ...}`` with the error's HTTP status.
``/ensure`` answers 200 at once with one JSON line per half second
(``{"phase", "done", "total"}``) and ends with ``{"result": {...}}`` or ``{"error": ...}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from vmic.errors import BadRequest, VmicError
from vmic.health import readiness_body
from vmic.http_errors import errors_as_json
from vmic.json_body import json_body

from .node import Node

log = logging.getLogger("nodecache.api")
NODE: web.AppKey[Node] = web.AppKey("node", Node)


async def _body(request: web.Request, *keys: str) -> dict[str, Any]:
    body = await json_body(request)
    if not isinstance(body, dict) or any(not isinstance(body.get(k), str) or not body.get(k) for k in keys):
        raise BadRequest(f"expected a JSON object with {', '.join(keys)}")
    return body


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the daemon answers."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready when every followed catalogue has a verified, unexpired list in force."""
    status, body = readiness_body(request.app[NODE].lists.readiness())
    return web.json_response(body, status=status)


async def status(request: web.Request) -> web.Response:
    return web.json_response(await request.app[NODE].status())


async def _stream(request: web.Request, task: asyncio.Task[Any], lines: list[dict[str, Any]],
                  done: Callable[[Any], dict[str, Any]]) -> web.StreamResponse:
    """Answer 200 at once, then a JSON line per half second from ``lines`` (progress the
    task appends), then the task's result or error as the last line."""
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    while not task.done():
        await asyncio.wait([task], timeout=0.5)
        while lines:
            await response.write((json.dumps(lines.pop(0)) + "\n").encode())
    try:
        line = done(task.result())
    except VmicError as exc:
        line = exc.to_json()
    except asyncio.CancelledError:
        line = {"error": "cancelled", "message": "cancelled (image evicted or daemon stopping)"}
    except Exception:  # the stream has begun: the error becomes its last line
        log.exception("api.internal_error")
        line = {"error": "internal_error", "message": "internal error (see the daemon log)"}
    await response.write((json.dumps(line) + "\n").encode())
    await response.write_eof()
    return response


async def ensure(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE]
    wanted = (await _body(request, "image"))["image"]
    record = await node.held(wanted)
    if record is not None and record.state == "staged":
        await node.state.touch(record.sha512)
        return web.Response(text=json.dumps({"result": record.to_json()}) + "\n", content_type="application/x-ndjson")
    node.job_for(wanted)  # started now; UnknownImage -> 404 before anything is streamed
    lines: list[dict[str, Any]] = []
    task = asyncio.create_task(node.ensure(wanted, lines.append))  # the job's result, as the listing names it
    return await _stream(request, task, lines, lambda record: {"result": record.to_json()})


async def evict(request: web.Request) -> web.Response:
    record = await request.app[NODE].evict((await _body(request, "image"))["image"])
    return web.json_response({"evicted": record.to_json()})


async def gc(request: web.Request) -> web.Response:
    plan = await request.app[NODE].gc()
    return web.json_response({"evicted": [e.to_json() for e in plan.evictions], "used": plan.used_after,
                              "over_watermark": plan.over_watermark})


async def refresh(request: web.Request) -> web.Response:
    node = request.app[NODE]
    await node.refresh()
    return web.json_response((await node.status())["catalogues"])


async def add_ref(request: web.Request) -> web.Response:
    body = await _body(request, "image", "holder")
    record = await request.app[NODE].keeper.add_reference(body["image"], body["holder"], str(body.get("disk", "")))
    return web.json_response({"image": record.to_json(), "holder": body["holder"]}, status=201)


async def drop_ref(request: web.Request) -> web.Response:
    holder = request.match_info["holder"]
    if not await request.app[NODE].keeper.drop_reference(holder):
        return web.json_response({"error": "not_found", "message": f"no reference held by {holder!r}"}, status=404)
    return web.json_response({"dropped": holder})


async def create_vm(request: web.Request) -> web.StreamResponse:
    provisioner = request.app[NODE].provisioner
    vm = provisioner.request(await json_body(request))  # 400 before anything is streamed
    lines: list[dict[str, Any]] = []
    task = asyncio.create_task(provisioner.create(vm, lines.append))
    await asyncio.wait([task], timeout=0.2)
    error = task.exception() if task.done() else None
    if error is not None:  # quick refusals keep their own HTTP status
        raise error
    return await _stream(request, task, lines, lambda record: {"result": record.to_json()})


async def list_vms(request: web.Request) -> web.Response:
    return web.json_response([view.to_json() for view in await request.app[NODE].provisioner.all()])


async def show_vm(request: web.Request) -> web.Response:
    return web.json_response((await request.app[NODE].provisioner.show(request.match_info["name"])).to_json())


async def start_vm(request: web.Request) -> web.Response:
    record = await request.app[NODE].provisioner.start(request.match_info["name"])
    return web.json_response({"started": record.name})


async def stop_vm(request: web.Request) -> web.Response:
    record = await request.app[NODE].provisioner.stop(request.match_info["name"])
    return web.json_response({"stopped": record.name})


async def destroy_vm(request: web.Request) -> web.Response:
    record = await request.app[NODE].provisioner.destroy(request.match_info["name"])
    return web.json_response({"destroyed": record.name})


async def rebase_vms(request: web.Request) -> web.Response:
    return web.json_response({"rebased": await request.app[NODE].provisioner.rebase()})


async def reap_vms(request: web.Request) -> web.Response:
    return web.json_response({"reaped": await request.app[NODE].provisioner.reap()})


async def metrics(request: web.Request) -> web.Response:
    node = request.app[NODE]
    await node.refresh_metrics()
    return web.Response(body=generate_latest(node.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


def make_app(node: Node) -> web.Application:
    app = web.Application(middlewares=[node.metrics.http.middleware(), errors_as_json(log, "daemon")])
    app[NODE] = node
    app.add_routes([
        web.get("/status", status),
        web.get("/readyz", readyz),
        web.get("/healthz", healthz),
        web.post("/ensure", ensure),
        web.post("/evict", evict),
        web.post("/gc", gc),
        web.post("/refresh", refresh),
        web.post("/refs", add_ref),
        web.delete("/refs/{holder}", drop_ref),
        web.get("/metrics", metrics),
        web.post("/vms", create_vm),
        web.get("/vms", list_vms),
        web.post("/vms/rebase", rebase_vms),
        web.post("/vms/reap", reap_vms),
        web.get("/vms/{name}", show_vm),
        web.post("/vms/{name}/start", start_vm),
        web.post("/vms/{name}/stop", stop_vm),
        web.delete("/vms/{name}", destroy_vm),
    ])
    return app


def metrics_app(node: Node) -> web.Application:
    app = web.Application(middlewares=[node.metrics.http.middleware()])
    app[NODE] = node
    app.add_routes([web.get("/metrics", metrics), web.get("/readyz", readyz), web.get("/healthz", healthz)])
    return app
