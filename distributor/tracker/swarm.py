"""The tracker's memory: who is in which swarm, and which peers to give whom. Pure: no I/O.

Peer selection is topology-aware: a requester the topology places gets its nearest
group (its rack, or its site if the rack has no one else) and a share of the answer
(``random_share``, a quarter) drawn at random from everyone farther, even when the swarm
is smaller than ``numwant``, so that most bytes stay near. Uber's Kraken found that a
strictly nearest-first answer lets the group that started first starve the others of
the origin; the random far share keeps the swarm one connected whole.
A seed is given only leechers: seeds have nothing to fetch from each other.

What peers say of themselves is unauthenticated: one address may hold at most
``max_peers_per_address`` peers (ports) of a swarm, and a node daemon's name counts only
from the address that first announced it there (a spoofed name from another address is
recorded without it).
"""

from __future__ import annotations

import ipaddress
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .announce import Announce, TrackerError
from .topology import Location, Topology


@dataclass
class Peer:
    peer_id: bytes
    ip: str
    port: int
    left: int
    location: Location
    last_seen: float
    #: address and port as compact answers carry them (BEP 23 / BEP 7), packed once
    packed: bytes = b""
    #: a node daemon's name (from its User-Agent), "" for other clients
    name: str = ""

    @property
    def ipv6(self) -> bool:
        return len(self.packed) == 18


def packed_address(ip: str, port: int) -> bytes:
    return ipaddress.ip_address(ip).packed + port.to_bytes(2, "big")


@dataclass
class Swarm:
    peers: dict[tuple[str, int], Peer] = field(default_factory=dict)
    downloaded: int = 0  #: completed events seen
    complete: int = 0  #: seeds among ``peers``, kept as peers come, change and go
    per_address: dict[str, int] = field(default_factory=dict)  #: peers (ports) of each address
    #: node name -> the address that first announced it, while a peer of that address has it
    names: dict[str, str] = field(default_factory=dict)

    @property
    def incomplete(self) -> int:
        return len(self.peers) - self.complete

    def put(self, key: tuple[str, int], peer: Peer) -> None:
        old = self.peers.get(key)
        self.complete += (peer.left == 0) - (old is not None and old.left == 0)
        if old is None:
            self.per_address[peer.ip] = self.per_address.get(peer.ip, 0) + 1
        elif old.name and old.name != peer.name:
            self._unbind(old)
        self.peers[key] = peer
        if peer.name:
            self.names.setdefault(peer.name, peer.ip)

    def drop(self, key: tuple[str, int]) -> None:
        old = self.peers.pop(key, None)
        if old is None:
            return
        if old.left == 0:
            self.complete -= 1
        left = self.per_address[old.ip] - 1
        if left:
            self.per_address[old.ip] = left
        else:
            del self.per_address[old.ip]
        if old.name:
            self._unbind(old)

    def name_for(self, name: str, ip: str) -> str:
        """``name`` if ``ip`` may use it here (the first address to announce it keeps it),
        else "": a second address's claim is not counted (preheat progress, origin shares)."""
        return name if name and self.names.get(name, ip) == ip else ""

    def _unbind(self, old: Peer) -> None:
        if self.names.get(old.name) == old.ip and not any(
                p.name == old.name and p.ip == old.ip for p in self.peers.values() if p is not old):
            del self.names[old.name]


@dataclass
class Swarms:
    topology: Topology = field(default_factory=Topology)
    #: a peer that has not announced for this long is forgotten
    peer_expiry: float = 1800.0
    random_share: float = 0.25
    #: peers one address may register in one swarm (ports); more are refused
    max_peers_per_address: int = 16
    rng: random.Random = field(default_factory=random.Random)
    clock: Callable[[], float] = time.monotonic
    swarms: dict[bytes, Swarm] = field(default_factory=dict)

    def announce(self, request: Announce, name: str = "") -> tuple[Swarm, list[Peer]]:
        """Record the announce; return the swarm and the peers to tell the requester about.

        Costs O(numwant) when no topology is configured (a random sample), O(peers) with
        one (peers are grouped by distance). Silent peers are skipped here and removed by
        :meth:`expire`, which the service calls periodically.
        """
        now = self.clock()
        swarm = self.swarms.setdefault(request.info_hash, Swarm())
        key = (request.ip, request.port)
        if request.event == "stopped":
            swarm.drop(key)
            return swarm, []
        if request.event == "completed":
            swarm.downloaded += 1
        known = swarm.peers.get(key)
        if known is None and swarm.per_address.get(request.ip, 0) >= self.max_peers_per_address:
            raise TrackerError(f"too many peers from {request.ip} in this swarm (at most "
                               f"{self.max_peers_per_address})")
        location = known.location if known is not None else self.topology.locate(request.ip)
        packed = known.packed if known is not None else packed_address(request.ip, request.port)
        swarm.put(key, Peer(request.peer_id, request.ip, request.port, request.left, location, now, packed,
                            swarm.name_for(name, request.ip)))

        def wanted(k: tuple[str, int], p: Peer) -> bool:
            return k != key and not (request.seeding and p.left == 0) and now - p.last_seen <= self.peer_expiry

        # a leecher may be given almost any peer; a seed skips seeds, so it needs about twice as many
        sample = 2 * request.numwant + 8 if request.seeding else request.numwant + 8
        if not self.topology.subnets and len(swarm.peers) > sample:
            picked = []
            for k in self.rng.sample(list(swarm.peers), sample):
                if wanted(k, swarm.peers[k]):
                    picked.append(swarm.peers[k])
                    if len(picked) == request.numwant:
                        return swarm, picked
            # too few in the sample (e.g. a seed in a swarm of seeds): look at every peer
        others = [p for k, p in swarm.peers.items() if wanted(k, p)]
        return swarm, self.select(others, location, request.numwant)

    def select(self, peers: list[Peer], near: Location, numwant: int) -> list[Peer]:
        """Nearest first, with a random share from farther away.

        For a requester the topology places, an answer holds its nearest group (its rack,
        or its site if its rack has no one else) and ``random_share`` of the answer drawn
        at random from everyone farther, also when the swarm is smaller than ``numwant``:
        handing every small swarm out whole would make the map useless. For a requester
        the topology does not know, nearest-first ordering still fills a large answer.
        """
        by_distance: list[list[Peer]] = [[], [], []]
        for peer in peers:
            by_distance[near.distance(peer.location)].append(peer)
        for group in by_distance:
            self.rng.shuffle(group)
        total = min(numwant, len(peers))
        random_count = math.ceil(total * self.random_share) if self.random_share > 0 else 0
        if near.rack is not None:
            nearest = next((d for d in (0, 1) if by_distance[d]), None)
            if nearest is not None:
                farther = [p for d in range(nearest + 1, 3) for p in by_distance[d]]
                far_count = min(random_count, len(farther))
                return by_distance[nearest][: total - far_count] + self.rng.sample(farther, far_count)
        ordered = [peer for group in by_distance for peer in group]
        if len(ordered) <= numwant:
            return ordered
        chosen = ordered[: numwant - random_count]
        rest = ordered[numwant - random_count:]
        return chosen + self.rng.sample(rest, min(random_count, len(rest)))

    def expire(self) -> None:
        """Forget silent peers, and swarms left empty."""
        now = self.clock()
        for info_hash in list(self.swarms):
            swarm = self.swarms[info_hash]
            for key in [k for k, p in swarm.peers.items() if now - p.last_seen > self.peer_expiry]:
                swarm.drop(key)
            if not swarm.peers:
                del self.swarms[info_hash]
