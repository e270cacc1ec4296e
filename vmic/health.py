"""What every service's ``/readyz`` answers with: named checks, each ok or not, and why."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


def readiness_body(checks: list[Check]) -> tuple[int, dict[str, Any]]:
    """``/readyz``'s status and JSON body: 200 when there are checks and all pass, else 503."""
    ready = bool(checks) and all(c.ok for c in checks)
    return (200 if ready else 503), {"status": "ready" if ready else "not_ready", "checks": [c.to_json() for c in checks]}


def list_checks(followers: Mapping[str, Any], now: dt.datetime) -> list[Check]:
    """Per followed catalogue (a :class:`vmic.follow.ListFollower` by URL): is a verified
    list in force, and not expired? What the tracker's, seeder's and node's ``/readyz`` ask."""
    checks = []
    for url, follower in followers.items():
        current = follower.current
        if current is None:
            reason = follower.refused or follower.unreachable or "not looked at yet"
            checks.append(Check(f"list {url}", False, f"no list in force ({reason})"))
        else:
            checks.append(Check(f"list {url}", current.expires > now,
                                f"version {current.version}, expires {current.expires:%Y-%m-%dT%H:%M:%SZ}"))
    return checks
