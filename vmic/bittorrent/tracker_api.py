"""Our tracker's own JSON endpoints, both sides: the URL layout (derived here only), the
typed answers the tracker builds, and a small client that reads them with a size cap.

    GET <base>/swarm/<btih>               SwarmView: who is in an image's swarm, how far each is
    GET <base>/swarm/<btih>/share?node=N  ShareView: node N's origin share

``<base>`` is an announce URL without its ``/announce``. A stock tracker has neither
endpoint: its announce URLs give None here, and callers do without.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import aiohttp

from ..capped import read_capped
from ..errors import BadRequest, VmicError
from ..json_body import parse_json
from .share import Share

MAX_ANSWER_BYTES = 2**16  #: a share answer
MAX_SWARM_BYTES = 16 * 2**20  #: a swarm of many thousand peers
ANNOUNCE = "/announce"


def tracker_base(announce_url: str) -> str | None:
    """The base URL of our tracker's JSON endpoints, or None if ``announce_url`` is not an
    HTTP announce URL (UDP, or a tracker with another layout)."""
    if announce_url.startswith(("http://", "https://")) and announce_url.endswith(ANNOUNCE):
        return announce_url[: -len(ANNOUNCE)]
    return None


def swarm_url(announce_urls: Iterable[str], btih: str) -> str | None:
    base = next((b for u in announce_urls if (b := tracker_base(u)) is not None), None)
    return f"{base}/swarm/{btih}" if base is not None else None


def share_url(announce_urls: Iterable[str], btih: str, node: str) -> str | None:
    """Where ``node`` asks for its share: the ``/swarm/<btih>/share`` of the first HTTP tracker."""
    swarm = swarm_url(announce_urls, btih)
    return f"{swarm}/share?{urllib.parse.urlencode({'node': node})}" if swarm is not None else None


@dataclass(frozen=True)
class SwarmPeer:
    name: str | None  #: a node daemon's name (from its User-Agent); None for other clients
    ip: str
    port: int
    left: int
    done: float | None  #: share of the image it has, as it announced (None: size unknown)
    seen_seconds_ago: float

    @property
    def seeding(self) -> bool:
        return self.left == 0

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "ip": self.ip, "port": self.port, "left": self.left, "seeding": self.seeding,
                "done": self.done, "seen_seconds_ago": self.seen_seconds_ago}

    @classmethod
    def from_json(cls, body: Any) -> SwarmPeer:
        if not isinstance(body, dict):
            raise BadRequest("a swarm peer must be a JSON object")
        name, done = body.get("name"), body.get("done")
        return cls(str(name) if name else None, str(body["ip"]), int(body["port"]), int(body["left"]),
                   float(done) if done is not None else None, float(body["seen_seconds_ago"]))


@dataclass(frozen=True)
class SwarmView:
    btih: str
    size: int
    self_reported: str  #: what the figures are worth (what peers announced, unverified)
    peers: tuple[SwarmPeer, ...]

    def to_json(self) -> dict[str, Any]:
        return {"btih": self.btih, "size": self.size, "self_reported": self.self_reported,
                "peers": [p.to_json() for p in self.peers]}

    @classmethod
    def from_json(cls, body: Any) -> SwarmView:
        if not isinstance(body, dict) or not isinstance(body.get("peers"), list):
            raise BadRequest("a swarm answer must be a JSON object with peers")
        return cls(str(body["btih"]), int(body["size"]), str(body.get("self_reported", "")),
                   tuple(SwarmPeer.from_json(p) for p in body["peers"]))


@dataclass(frozen=True)
class ShareView:
    btih: str
    node: str
    share: Share

    def to_json(self) -> dict[str, Any]:
        return {"btih": self.btih, "node": self.node, "index": self.share.index, "count": self.share.count}

    @classmethod
    def from_json(cls, body: Any) -> ShareView:
        if not isinstance(body, dict):
            raise BadRequest("a share answer must be a JSON object")
        index, count = int(body["index"]), int(body["count"])
        if not 0 <= index < count <= 10**6:
            raise BadRequest(f"share {index}/{count} is out of bounds")
        return cls(str(body["btih"]), str(body["node"]), Share(index, count))


class NotOurTracker(VmicError):
    """The tracker does not have the endpoint (a stock tracker)."""

    code = "not_our_tracker"


async def _get_json(http: aiohttp.ClientSession, url: str, max_bytes: int, what: str) -> Any:
    async with http.get(url) as response:
        if response.status in (400, 404, 405, 501):
            raise NotOurTracker(f"{url} answered HTTP {response.status}")
        response.raise_for_status()
        return parse_json(await read_capped(response, max_bytes, what, BadRequest), what)


async def fetch_swarm(http: aiohttp.ClientSession, url: str) -> SwarmView:
    """The tracker's view of one swarm (aiohttp errors, NotOurTracker, BadRequest)."""
    try:
        return SwarmView.from_json(await _get_json(http, url, MAX_SWARM_BYTES, "the tracker's swarm answer"))
    except (KeyError, TypeError, ValueError) as exc:
        raise BadRequest(f"the tracker's swarm answer is malformed: {exc}") from None


async def fetch_share(http: aiohttp.ClientSession, url: str) -> Share:
    """A node's origin share (aiohttp errors, NotOurTracker, BadRequest)."""
    try:
        return ShareView.from_json(await _get_json(http, url, MAX_ANSWER_BYTES, "the tracker's share answer")).share
    except (KeyError, TypeError, ValueError) as exc:
        raise BadRequest(f"the tracker's share answer is malformed: {exc}") from None
