"""Preheat: push an image to all nodes, a share of them, or named nodes, before anyone
asks for it. Pure, no I/O: shared by the catalogue (which signs the target into the
list as ``vmic:preheat``) and node daemons (which obey it).

    {"all": true}              every node
    {"share": 0.25}            a quarter of the nodes, chosen by a hash of node and image
                               (stable: the same nodes every time, spread across images)
    {"nodes": ["hv-001", ...]} these node names

Because the target is in the signed list, nobody but the catalogue's publishers can make
nodes fetch something; progress per node comes from the tracker (``/swarm/<btih>``),
which sees every node's announces and their ``left``, under the node's name.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

from .errors import BadRequest
from .imagelist.extensions import PREHEAT

EXTENSION = PREHEAT
NODE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")  #: fullmatch only
USER_AGENT_PREFIX = "vmic-node/"  #: node daemons announce as "vmic-node/<name>"


def parse_target(body: Any) -> dict[str, Any] | None:
    """A valid target from a request body (or None to cancel), else BadRequest."""
    if body is None or body == {}:
        return None
    if not isinstance(body, Mapping) or len(body) != 1:
        raise BadRequest('preheat: expected one of {"all": true}, {"share": 0.25}, {"nodes": ["name", ...]}')
    key, value = next(iter(body.items()))
    if key == "all" and value is True:
        return {"all": True}
    if key == "share" and isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= 1:
        return {"share": float(value)}
    if key == "nodes" and isinstance(value, list) and value and all(isinstance(n, str) and NODE_NAME.fullmatch(n)
                                                                    for n in value):
        return {"nodes": sorted(set(value))}
    raise BadRequest(f"preheat: {dict(body)!r} is not a target (all: true; share in (0, 1]; nodes: a list of "
                     "node names)")


def targets(target: Any, node: str, image_identifier: str) -> bool:
    """Whether ``target`` (as found in a verified list) asks ``node`` to stage the image."""
    if not isinstance(target, Mapping):
        return False
    if target.get("all") is True:
        return True
    share = target.get("share")
    if isinstance(share, (int, float)) and not isinstance(share, bool):
        digest = hashlib.sha256(f"{node}\0{image_identifier}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < float(share)
    nodes = target.get("nodes")
    return isinstance(nodes, list) and node in nodes


def node_from_user_agent(user_agent: str) -> str | None:
    if not user_agent.startswith(USER_AGENT_PREFIX):
        return None
    name = user_agent[len(USER_AGENT_PREFIX):].split(" ", 1)[0]
    return name if NODE_NAME.fullmatch(name) else None
