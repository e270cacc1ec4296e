"""The tracker's memory across restarts: its swarms, as JSON. Pure: no I/O (the server writes and reads the file).

A restart would otherwise forget every peer until nodes announce again (up to an
announce interval): preheat progress would vanish and new nodes would find no peers.
Times are kept as wall-clock "last seen" and turned back into the tracker's monotonic
clock on restore; what has expired meanwhile is dropped, and what the file says is
checked like an announce (a damaged file restores what is sound and no more).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from vmic.preheat import NODE_NAME

from .announce import Announce, TrackerError
from .swarm import Swarms

VERSION = 1


def snapshot(swarms: Swarms, wall_now: float) -> dict[str, Any]:
    """Everything a restart needs, at wall-clock time ``wall_now``."""
    now = swarms.clock()
    peers = []
    for info_hash, swarm in swarms.swarms.items():
        for peer in swarm.peers.values():
            peers.append({"info_hash": info_hash.hex(), "peer_id": peer.peer_id.hex(), "ip": peer.ip,
                          "port": peer.port, "left": peer.left, "name": peer.name,
                          "seen": wall_now - (now - peer.last_seen)})
    downloaded = {info_hash.hex(): swarm.downloaded for info_hash, swarm in swarms.swarms.items() if swarm.downloaded}
    return {"version": VERSION, "peers": peers, "downloaded": downloaded}


def restore(swarms: Swarms, data: Any, wall_now: float, max_peers: int = 10**6) -> int:
    """Put a snapshot back (peers not expired since); the number of peers restored. Entries
    that do not parse are skipped."""
    if not isinstance(data, dict) or data.get("version") != VERSION:
        return 0
    now = swarms.clock()

    def age(seen: Any) -> float | None:
        if not isinstance(seen, (int, float)) or isinstance(seen, bool):
            return None
        return max(0.0, wall_now - float(seen))

    restored = 0
    peers = data.get("peers")
    for entry in peers[:max_peers] if isinstance(peers, list) else []:
        try:
            elapsed = age(entry["seen"])
            if elapsed is None or elapsed > swarms.peer_expiry:
                continue
            ipaddress.ip_address(entry["ip"])
            request = Announce(bytes.fromhex(entry["info_hash"]), bytes.fromhex(entry["peer_id"]), str(entry["ip"]),
                               int(entry["port"]), 0, 0, int(entry["left"]), "", 0, True, False)
            if len(request.info_hash) != 20 or len(request.peer_id) != 20 or not 0 < request.port < 65536 \
                    or request.left < 0:
                continue
            name = entry.get("name")
            swarm, _ = swarms.announce(request, name if isinstance(name, str) and NODE_NAME.fullmatch(name) else "")
        except (KeyError, TypeError, ValueError, TrackerError):
            continue
        swarm.peers[(request.ip, request.port)].last_seen = now - elapsed
        restored += 1
    downloaded = data.get("downloaded")
    for info_hash, count in downloaded.items() if isinstance(downloaded, dict) else []:
        try:
            swarm = swarms.swarms[bytes.fromhex(info_hash)]
        except (KeyError, TypeError, ValueError):
            continue
        if isinstance(count, int) and count >= 0:
            swarm.downloaded = count
    return restored
