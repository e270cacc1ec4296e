"""The HTTP tracker: ``GET /announce`` and ``GET /scrape``, private to one catalogue.

It answers only for info hashes the catalogue's *verified* signed list names
(``vmic:btih``, and ``vmic:btmh`` cut to 20 bytes as v2 clients announce it); it
follows the catalogue's ``/events`` stream and re-reads the list at once when it
changes, and polls as a fallback. Every answer is bencoded; any problem is a
``failure reason``, never a 500.

For operators and node daemons it also answers, in JSON: ``GET /swarm/<btih>`` (who is in
an image's swarm, how far each is: preheat's progress) and ``GET /swarm/<btih>/share?node=``
(a node's origin share, :mod:`vmic.bittorrent.share`).

    [tracker]
    port = 6969
    catalogue_url = "http://catalogue:8470"
    catalogue_ca = "/etc/vmic/ca"            # CA file or directory of the catalogue's endorser
    endorser_dn = "/C=CH/O=Site/CN=endorser"
    interval = 300                           # seconds between announces (a LAN can afford it)
    [tracker.topology]                       # site/rack -> subnets
    "geneva/rack-1" = ["10.1.1.0/24"]
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import libtorrent as lt
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, generate_latest

from vmic.background import background_tasks
from vmic.bittorrent.share import place
from vmic.bittorrent.tracker_api import ShareView, SwarmPeer, SwarmView
from vmic.config import Duration, Listen, Listens
from vmic.errors import BadRequest, NotFound
from vmic.follow import FollowsCatalogue, ListFollower, follower_session
from vmic.health import list_checks, readiness_body
from vmic.http_errors import errors_as_json
from vmic.imagelist.extensions import BTIH, BTMH
from vmic.imagelist.model import ImageList
from vmic.log import event
from vmic.preheat import node_from_user_agent
from vmic.private import write_private
from vmic.service_metrics import FollowerCollector, HttpMetrics, service_registry

from .announce import Announce, TrackerError, parse_announce, parse_scrape
from .snapshot import restore, snapshot
from .swarm import Peer, Swarms
from .topology import Topology

SHARE_CACHE_SECONDS = 1.0  #: how long one sorted list of a swarm's nodes answers share requests
log = logging.getLogger("distributor.tracker")


@dataclass(frozen=True)
class TrackerConfig(FollowsCatalogue, Listens):
    #: where nodes announce
    listen: Listen = "127.0.0.1:6969"
    #: a connection that has not sent a whole announce (or sits idle) this long is closed
    header_timeout: Duration = 30.0
    #: how often peers announce (sent to them in whole seconds), and at least how far apart
    interval: Duration = 300.0
    #: (see interval)
    min_interval: Duration = 30.0
    #: forget peers silent for this long (default: three announce intervals)
    peer_expiry: Duration = 900.0
    #: share of each peer list drawn at random from the whole swarm (the rest: nearest first)
    random_share: float = 0.25
    #: peers (ports) one address may register in one swarm
    max_peers_per_address: int = 16
    #: re-read the catalogue's list at least this often (its event stream is faster)
    poll_interval: Duration = 60.0
    #: where the tracker keeps its swarms and the node names it heard across restarts (written
    #: every minute and at a stop, 0600; empty: memory only, forgotten at a restart)
    state_file: Path | None = None
    #: "site/rack" -> subnets: nodes get peers of their rack, then site, first
    topology: dict[str, list[str]] = field(default_factory=dict)
    #: debug, info, warning or error (reloaded on SIGHUP)
    log_level: str = "info"


class Allowlist:
    """The info hashes of the catalogue's current images."""

    def __init__(self) -> None:
        self.hashes: frozenset[bytes] = frozenset()
        self.list_version: int | None = None
        self.sizes: dict[bytes, int] = {}  #: hv:size by info hash (progress in /swarm)

    def __contains__(self, info_hash: bytes) -> bool:
        return info_hash in self.hashes

    def update(self, image_list: ImageList) -> None:
        hashes = set()
        sizes = {}
        for image in image_list.images:
            if BTIH in image.extra:
                hashes.add(bytes.fromhex(str(image.extra[BTIH])))
                sizes[bytes.fromhex(str(image.extra[BTIH]))] = image.size
            if BTMH in image.extra:
                hashes.add(bytes.fromhex(str(image.extra[BTMH]))[:20])  # how v2 clients announce
        self.hashes = frozenset(hashes)
        self.sizes = sizes
        self.list_version = image_list.version


class Metrics:
    def __init__(self) -> None:
        self.registry = r = service_registry("tracker")
        self.http = HttpMetrics(r, "vmic_tracker")
        self.announces = Counter("vmic_tracker_announces", "Announces by result", ["result"], registry=r)
        self.scrapes = Counter("vmic_tracker_scrapes", "Scrapes", registry=r)
        self.peers = Gauge("vmic_tracker_peers", "Peers known", registry=r)
        self.swarms = Gauge("vmic_tracker_swarms", "Swarms with peers", registry=r)
        self.allowed = Gauge("vmic_tracker_allowed_torrents", "Info hashes the catalogue lists", registry=r)


@dataclass
class Tracker:
    config: TrackerConfig
    swarms: Swarms
    allowlist: Allowlist = field(default_factory=Allowlist)
    metrics: Metrics = field(default_factory=Metrics)
    #: per info hash: when, and the sorted names of the swarm's nodes then (origin shares)
    _named: dict[bytes, tuple[float, list[str]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.follower = ListFollower(self.config.catalogue, log)
        self.metrics.registry.register(FollowerCollector("vmic_tracker", lambda: {self.config.catalogue.url: self.follower}))

    @classmethod
    def from_config(cls, config: TrackerConfig) -> Tracker:
        return cls(config, Swarms(Topology.from_config(config.topology), float(config.peer_expiry),
                                  config.random_share, config.max_peers_per_address))

    # --- answers ---------------------------------------------------------------------------

    def announce(self, query_string: str, remote_ip: str, user_agent: str = "") -> dict[bytes, Any]:
        request = parse_announce(query_string, remote_ip)
        if request.info_hash not in self.allowlist:
            raise TrackerError("unknown torrent: this tracker serves only the images of its catalogue")
        swarm, peers = self.swarms.announce(request, node_from_user_agent(user_agent) or "")
        answer: dict[bytes, Any] = {
            b"interval": int(self.config.interval), b"min interval": int(self.config.min_interval),
            b"complete": swarm.complete, b"incomplete": swarm.incomplete,
        }
        answer.update(_peers_field(peers, request))
        return answer

    def scrape(self, query_string: str) -> dict[bytes, Any]:
        wanted = parse_scrape(query_string) or sorted(self.allowlist.hashes)
        files = {}
        for info_hash in wanted:
            if info_hash in self.allowlist:
                swarm = self.swarms.swarms.get(info_hash)
                files[info_hash] = {b"complete": swarm.complete if swarm else 0,
                                    b"incomplete": swarm.incomplete if swarm else 0,
                                    b"downloaded": swarm.downloaded if swarm else 0}
        return {b"files": files}

    def _known(self, info_hash_hex: str) -> bytes:
        """The info hash of a torrent this tracker serves, from its hex form."""
        try:
            info_hash = bytes.fromhex(info_hash_hex)
        except ValueError:
            raise TrackerError("not an info hash") from None
        if info_hash not in self.allowlist:
            raise TrackerError("unknown torrent: this tracker serves only the images of its catalogue")
        return info_hash

    def swarm_view(self, info_hash_hex: str) -> SwarmView:
        """Every peer of one image's swarm with its progress: what preheat status shows."""
        info_hash = self._known(info_hash_hex)
        size = self.allowlist.sizes.get(info_hash, 0)
        swarm = self.swarms.swarms.get(info_hash)
        now = self.swarms.clock()
        peers = sorted(swarm.peers.values(), key=lambda p: (p.name, p.ip, p.port)) if swarm else []
        return SwarmView(info_hash_hex, size, SELF_REPORTED, tuple(
            SwarmPeer(p.name or None, p.ip, p.port, p.left, round(1 - p.left / size, 4) if size else None,
                      round(now - p.last_seen, 1))
            for p in peers))

    def share_view(self, info_hash_hex: str, node: str) -> ShareView:
        """``node``'s origin share (:mod:`vmic.bittorrent.share`): its place among the named
        nodes of this image's swarm, downloading or done (done nodes keep their places, so
        the others' slices do not move as nodes finish)."""
        info_hash = self._known(info_hash_hex)
        now = self.swarms.clock()
        cached = self._named.get(info_hash)
        if cached is None or now - cached[0] >= SHARE_CACHE_SECONDS:
            swarm = self.swarms.swarms.get(info_hash)
            names = sorted({p.name for p in swarm.peers.values() if p.name} if swarm else set())
            cached = self._named[info_hash] = (now, names)
        return ShareView(info_hash_hex, node, place(node, cached[1]))

    # --- following the catalogue ---------------------------------------------------------

    async def take_list(self, image_list: ImageList) -> None:
        self.allowlist.update(image_list)
        self.metrics.allowed.set(len(self.allowlist.hashes))
        event(log, "tracker.list_accepted", version=image_list.version, torrents=len(self.allowlist.hashes))

    async def follow_catalogue(self) -> None:
        async with follower_session([self.config.catalogue.tls_ca]) as session:
            await self.follower.follow(session, self.take_list, self.config.poll_interval)

    # --- memory across restarts (distributor/tracker/snapshot.py) ------------------------------

    def load_state(self) -> None:
        path = self.config.state_file
        if path is None or not path.exists():
            return
        try:
            data = json.loads(path.read_bytes())
        except (OSError, ValueError) as exc:
            event(log, "tracker.state_unreadable", level=logging.WARNING, path=str(path), reason=str(exc))
            return
        peers = restore(self.swarms, data, time.time())
        event(log, "tracker.state_restored", path=str(path), peers=peers)

    def save_state(self) -> None:
        path = self.config.state_file
        if path is None:
            return
        try:
            write_private(path, json.dumps(snapshot(self.swarms, time.time())).encode())
        except OSError as exc:
            event(log, "tracker.state_not_saved", level=logging.WARNING, path=str(path), reason=exc.strerror)

    async def keep_state(self, every: float = 60.0) -> None:
        while True:
            await asyncio.sleep(every)
            self.save_state()

    async def expire_peers(self) -> None:
        """Forget silent peers, whether or not the catalogue answers."""
        while True:
            await asyncio.sleep(self.config.peer_expiry / 3)
            self.swarms.expire()
            self._named.clear()


def _peers_field(peers: list[Peer], request: Announce) -> dict[bytes, Any]:
    if not request.compact:
        return {b"peers": [
            {b"ip": p.ip.encode(), b"port": p.port, **({} if request.no_peer_id else {b"peer id": p.peer_id})}
            for p in peers
        ]}
    v4 = b"".join(p.packed for p in peers if not p.ipv6)
    v6 = b"".join(p.packed for p in peers if p.ipv6)
    return {b"peers": v4, b"peers6": v6}


def _bencoded(body: dict[bytes, Any]) -> web.Response:
    return web.Response(body=lt.bencode(body), content_type="text/plain")


TRACKER = web.AppKey("tracker", Tracker)


async def announce(request: web.Request) -> web.Response:
    tracker = request.app[TRACKER]
    try:
        answer = tracker.announce(request.rel_url.raw_query_string, request.remote or "",
                                  request.headers.get("User-Agent", ""))
    except TrackerError as exc:
        tracker.metrics.announces.labels("refused").inc()
        return _bencoded({b"failure reason": exc.message.encode()})
    except Exception:  # never a 500 to a BitTorrent client
        log.exception("tracker.internal_error")
        tracker.metrics.announces.labels("error").inc()
        return _bencoded({b"failure reason": b"internal tracker error"})
    tracker.metrics.announces.labels("ok").inc()
    return _bencoded(answer)


async def scrape(request: web.Request) -> web.Response:
    tracker = request.app[TRACKER]
    tracker.metrics.scrapes.inc()
    try:
        return _bencoded(tracker.scrape(request.rel_url.raw_query_string))
    except TrackerError as exc:
        return _bencoded({b"failure reason": exc.message.encode()})


#: what /swarm/<btih> says of its figures
SELF_REPORTED = ("left, done and seeding are what each peer announced, unverified; a node's name counts only "
                 "from the address that first announced it in this swarm")


class UnknownTorrent(NotFound):
    code = "unknown_torrent"


async def swarm_status(request: web.Request) -> web.Response:
    """JSON: who is in an image's swarm and how far each is (node names from node daemons'
    User-Agent, "vmic-node/<name>")."""
    try:
        return web.json_response(request.app[TRACKER].swarm_view(request.match_info["btih"]).to_json())
    except TrackerError as exc:
        raise UnknownTorrent(exc.message) from None


async def swarm_share(request: web.Request) -> web.Response:
    """JSON: the origin share of the node named by ``?node=`` (index, count)."""
    node = request.query.get("node", "")
    if not node or len(node) > 200:
        raise BadRequest("a share needs ?node=<name>")
    try:
        return web.json_response(request.app[TRACKER].share_view(request.match_info["btih"], node).to_json())
    except TrackerError as exc:
        raise UnknownTorrent(exc.message) from None


async def metrics(request: web.Request) -> web.Response:
    tracker = request.app[TRACKER]
    tracker.metrics.peers.set(sum(len(s.peers) for s in tracker.swarms.swarms.values()))
    tracker.metrics.swarms.set(len(tracker.swarms.swarms))
    return web.Response(body=generate_latest(tracker.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


def remembered(tracker: Tracker) -> Callable[[web.Application], AsyncIterator[None]]:
    """The swarms as the last run left them, saved again at the stop."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        tracker.load_state()
        yield
        tracker.save_state()

    return context


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready when the catalogue's verified list is in force and not expired (else every
    announce would be refused as an unknown torrent)."""
    tracker = request.app[TRACKER]
    status, body = readiness_body(list_checks({tracker.config.catalogue.url: tracker.follower},
                                              dt.datetime.now(dt.timezone.utc)))
    return web.json_response(body, status=status)


def make_app(tracker: Tracker, follow: bool = True) -> web.Application:
    # JSON routes; announce answers itself
    app = web.Application(middlewares=[tracker.metrics.http.middleware(), errors_as_json(log, "tracker")])
    app[TRACKER] = tracker
    app.add_routes([web.get("/announce", announce), web.get("/scrape", scrape), web.get("/metrics", metrics),
                    web.get("/healthz", healthz), web.get("/readyz", readyz),
                    web.get("/swarm/{btih}", swarm_status),
                    web.get("/swarm/{btih}/share", swarm_share)])
    if follow:
        app.cleanup_ctx.append(remembered(tracker))
        app.cleanup_ctx.append(background_tasks(tracker.follow_catalogue, tracker.expire_peers, tracker.keep_state))
    return app
