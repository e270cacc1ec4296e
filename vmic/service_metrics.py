"""What every vmic daemon's ``/metrics`` shows besides its own figures, named by
Prometheus conventions (counters end in ``_total``, units in the name, bounded labels):

- ``vmic_build_info{version, daemon}`` and the ``process_*`` / ``python_*`` metrics;
- HTTP requests by method, route (the route's template, never the raw path) and status,
  with a latency histogram per method and route (:class:`HttpMetrics`);
- per followed catalogue: the list in force (version, expiry), the last successful look,
  whether the catalogue was reachable and whether its last list was refused
  (:class:`FollowerCollector`);
- counters fed from totals that may fall (libtorrent's per-torrent byte counts start again
  when a torrent is added again): :class:`Accumulated` keeps only their increases.

Each daemon has its own registry (no global state): :func:`service_registry`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any, Protocol

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CollectorRegistry, Counter, Histogram, Info, PlatformCollector, ProcessCollector
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .version import installed_version

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def service_registry(daemon: str) -> CollectorRegistry:
    """A daemon's registry, with the build, process and Python metrics already in it."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    Info("vmic_build", "The vmic release this daemon runs", registry=registry).info(
        {"version": installed_version(), "daemon": daemon})
    return registry


def route_of(request: web.Request) -> str:
    """The route's template (``/images/{identifier}``), so that a label never holds a raw path."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


class HttpMetrics:
    """``<prefix>_http_requests_total{method,route,status}`` and
    ``<prefix>_http_request_duration_seconds{method,route}``."""

    def __init__(self, registry: CollectorRegistry, prefix: str) -> None:
        self.requests = Counter(f"{prefix}_http_requests", "HTTP requests answered, by method, route and status",
                                ["method", "route", "status"], registry=registry)
        self.latency = Histogram(f"{prefix}_http_request_duration_seconds",
                                 "Time from a request's headers to its answer (a stream: to its end)",
                                 ["method", "route"], buckets=LATENCY_BUCKETS, registry=registry)

    def observe(self, request: web.Request, status: int, seconds: float) -> None:
        method = request.method if request.method in METHODS else "other"
        route = route_of(request)
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def middleware(self) -> Middleware:
        """The outermost middleware of an app: it sees every answer, errors included."""

        @web.middleware
        async def timed(request: web.Request, handler: Handler) -> web.StreamResponse:
            start = time.monotonic()
            status = 500
            try:
                response = await handler(request)
                status = response.status
                return response
            except web.HTTPException as exc:
                status = exc.status
                raise
            finally:
                self.observe(request, status, time.monotonic() - start)

        return timed


class FollowedList(Protocol):
    """What :class:`FollowerCollector` reads of a :class:`vmic.follow.ListFollower`."""

    current: Any
    refused: Any
    unreachable: str | None
    last_success: float | None


class FollowerCollector(Collector):
    """Per followed catalogue (label ``catalogue``: its URL, from the daemon's config):
    ``<prefix>_list_version``, ``<prefix>_list_expiry_timestamp_seconds``,
    ``<prefix>_list_last_success_timestamp_seconds``, ``<prefix>_list_reachable`` and
    ``<prefix>_list_refused``; read when scraped."""

    def __init__(self, prefix: str, followers: Callable[[], Mapping[str, FollowedList]]) -> None:
        self.prefix = prefix
        self.followers = followers

    def collect(self) -> Iterator[Metric]:
        p = self.prefix
        version = GaugeMetricFamily(f"{p}_list_version", "hv:version of the list in force", labels=["catalogue"])
        expiry = GaugeMetricFamily(f"{p}_list_expiry_timestamp_seconds", "When the list in force expires",
                                   labels=["catalogue"])
        success = GaugeMetricFamily(f"{p}_list_last_success_timestamp_seconds",
                                    "When the catalogue last answered with a good or unchanged list",
                                    labels=["catalogue"])
        reachable = GaugeMetricFamily(f"{p}_list_reachable", "1 if the last look reached the catalogue",
                                      labels=["catalogue"])
        refused = GaugeMetricFamily(f"{p}_list_refused", "1 if the last list fetched was refused (the one in "
                                    "force stays)", labels=["catalogue"])
        for url, follower in self.followers().items():
            if follower.current is not None:
                version.add_metric([url], follower.current.version)
                expiry.add_metric([url], follower.current.expires.timestamp())
            if follower.last_success is not None:
                success.add_metric([url], follower.last_success)
            reachable.add_metric([url], 0 if follower.unreachable else 1)
            refused.add_metric([url], 1 if follower.refused is not None else 0)
        yield from (version, expiry, success, reachable, refused)


class Accumulated:
    """Increases of totals that may fall or vanish (keyed, e.g. by torrent): what a
    Prometheus counter may add. A total lower than last seen started again from 0."""

    def __init__(self) -> None:
        self._last: dict[str, int] = {}

    def increase(self, totals: Mapping[str, int]) -> int:
        grown = 0
        for key, value in totals.items():
            last = self._last.get(key, 0)
            grown += value - last if value >= last else value
        self._last = dict(totals)
        return grown
