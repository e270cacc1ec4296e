"""The tracker's memory: who is in which swarm, and which peers to give whom. Pure: no I/O.

Peer selection is topology-aware: peers in the requester's rack first, then its site,
then the rest, so that most bytes stay near. Uber's Kraken found that a strictly
nearest-first answer lets the group that started first starve the others of the
origin; so a share of every answer (``random_share``) is drawn at random from the
peers the nearest-first part left out, keeping the swarm one connected whole.
A seed is given only leechers: seeds have nothing to fetch from each other.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .announce import Announce
from .topology import Location, Topology


@dataclass
class Peer:
    peer_id: bytes
    ip: str
    port: int
    left: int
    location: Location
    last_seen: float


@dataclass
class Swarm:
    peers: dict[tuple[str, int], Peer] = field(default_factory=dict)
    downloaded: int = 0  #: completed events seen

    @property
    def complete(self) -> int:
        return sum(1 for p in self.peers.values() if p.left == 0)

    @property
    def incomplete(self) -> int:
        return len(self.peers) - self.complete


@dataclass
class Swarms:
    topology: Topology = field(default_factory=Topology)
    #: a peer that has not announced for this long is forgotten
    peer_expiry: float = 1800.0
    random_share: float = 0.25
    rng: random.Random = field(default_factory=random.Random)
    clock: Callable[[], float] = time.monotonic
    swarms: dict[bytes, Swarm] = field(default_factory=dict)

    def announce(self, request: Announce) -> tuple[Swarm, list[Peer]]:
        """Record the announce; return the swarm and the peers to tell the requester about."""
        now = self.clock()
        swarm = self.swarms.setdefault(request.info_hash, Swarm())
        self._expire(swarm, now)
        key = (request.ip, request.port)
        if request.event == "stopped":
            swarm.peers.pop(key, None)
            return swarm, []
        if request.event == "completed":
            swarm.downloaded += 1
        location = self.topology.locate(request.ip)
        swarm.peers[key] = Peer(request.peer_id, request.ip, request.port, request.left, location, now)
        others = [p for k, p in swarm.peers.items() if k != key and not (request.seeding and p.left == 0)]
        return swarm, self.select(others, location, request.numwant)

    def select(self, peers: list[Peer], near: Location, numwant: int) -> list[Peer]:
        by_distance: list[list[Peer]] = [[], [], []]
        for peer in peers:
            by_distance[near.distance(peer.location)].append(peer)
        for group in by_distance:
            self.rng.shuffle(group)
        ordered = [peer for group in by_distance for peer in group]
        if len(ordered) <= numwant:
            return ordered
        random_count = math.ceil(numwant * self.random_share) if self.random_share > 0 else 0
        chosen = ordered[: numwant - random_count]
        rest = ordered[numwant - random_count:]
        return chosen + self.rng.sample(rest, min(random_count, len(rest)))

    def expire(self) -> None:
        now = self.clock()
        for info_hash in list(self.swarms):
            self._expire(self.swarms[info_hash], now)
            if not self.swarms[info_hash].peers:
                del self.swarms[info_hash]

    def _expire(self, swarm: Swarm, now: float) -> None:
        for key in [k for k, p in swarm.peers.items() if now - p.last_seen > self.peer_expiry]:
            del swarm.peers[key]
