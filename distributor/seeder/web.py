"""The seeder's HTTP listener (``metrics_listen``): ``/metrics``, ``/healthz`` (liveness)
and ``/readyz`` (the catalogue's verified list in force and not expired).

Metrics, besides every daemon's (:mod:`vmic.service_metrics`): torrents seeded, peers
connected, payload bytes uploaded (a counter), images held back for the web seed
(:mod:`distributor.seeder.crowd`), and the followed list's state."""

from __future__ import annotations

import datetime as dt

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, generate_latest

from vmic.health import list_checks, readiness_body
from vmic.service_metrics import Accumulated, FollowerCollector, HttpMetrics, service_registry

from .daemon import Seeder


class SeederMetrics:
    def __init__(self, seeder: Seeder) -> None:
        self.seeder = seeder
        self.registry = r = service_registry("seeder")
        self.http = HttpMetrics(r, "vmic_seeder")
        self.torrents = Gauge("vmic_seeder_torrents", "Images seeded now", registry=r)
        self.peers = Gauge("vmic_seeder_peers", "Peers connected, over every torrent", registry=r)
        self.uploaded = Counter("vmic_seeder_uploaded_bytes", "Payload bytes uploaded to peers", registry=r)
        self.yielding = Gauge("vmic_seeder_yielding_torrents",
                              "Images the seeder holds back on while their crowd takes them from the web seed",
                              registry=r)
        self._uploaded_seen = Accumulated()
        r.register(FollowerCollector("vmic_seeder", lambda: {seeder.config.catalogue.url: seeder.follower}))

    def refresh(self) -> None:
        statuses = {h: s.handle.status() for h, s in self.seeder.seeding.items()}
        self.torrents.set(len(statuses))
        self.peers.set(sum(s.num_peers for s in statuses.values()))
        self.yielding.set(sum(s.serving.yielding for s in self.seeder.seeding.values()))
        self.uploaded.inc(self._uploaded_seen.increase({h: s.total_payload_upload for h, s in statuses.items()}))


METRICS: web.AppKey[SeederMetrics] = web.AppKey("metrics", SeederMetrics)


async def metrics(request: web.Request) -> web.Response:
    request.app[METRICS].refresh()
    return web.Response(body=generate_latest(request.app[METRICS].registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    seeder = request.app[METRICS].seeder
    status, body = readiness_body(list_checks({seeder.config.catalogue.url: seeder.follower},
                                              dt.datetime.now(dt.timezone.utc)))
    return web.json_response(body, status=status)


def make_app(seeder: Seeder) -> web.Application:
    seeder_metrics = SeederMetrics(seeder)
    app = web.Application(middlewares=[seeder_metrics.http.middleware()])
    app[METRICS] = seeder_metrics
    app.add_routes([web.get("/metrics", metrics), web.get("/healthz", healthz), web.get("/readyz", readyz)])
    return app
