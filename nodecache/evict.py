"""What to evict from the cache: pure, no I/O.

1. images revoked from every followed list, and images whose list (or own
   ``dc:date:expires``) has expired: evicted at once;
2. then, while the cache's *own* bytes exceed ``high`` x capacity: least recently used
   first, down to ``low`` x capacity (hysteresis: one eviction pass frees a good share,
   not one image at a time).

An image with references (a running VM's overlay or snapshot) is never evicted, however
old, revoked or large; if only referenced images remain, the cache stays above its
watermark and says so.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class CacheEntry:
    sha512: str
    identifier: str
    size: int  #: bytes the cache holds for it (base plus seed copy)
    last_used: float  #: a timestamp; staging counts as a use
    listed: bool = True  #: named by a current list
    expired: bool = False
    references: int = 0


@dataclass(frozen=True)
class Eviction:
    sha512: str
    identifier: str
    reason: str  #: "revoked", "expired" or "space"

    def to_json(self) -> dict[str, str]:
        return {"sha512": self.sha512, "identifier": self.identifier, "reason": self.reason}


@dataclass(frozen=True)
class Plan:
    evictions: tuple[Eviction, ...]
    used_after: int
    over_watermark: bool  #: still above ``high`` after the plan (everything left is in use)


def plan(entries: Iterable[CacheEntry], capacity: int, high: float, low: float) -> Plan:
    remaining = list(entries)
    evictions: list[Eviction] = []
    for entry in list(remaining):
        if entry.references:
            continue
        reason = "revoked" if not entry.listed else "expired" if entry.expired else None
        if reason:
            evictions.append(Eviction(entry.sha512, entry.identifier, reason))
            remaining.remove(entry)
    used = sum(e.size for e in remaining)
    if capacity > 0 and used > high * capacity:
        for entry in sorted(remaining, key=lambda e: e.last_used):
            if used <= low * capacity:
                break
            if entry.references:
                continue
            evictions.append(Eviction(entry.sha512, entry.identifier, "space"))
            used -= entry.size
    return Plan(tuple(evictions), used, capacity > 0 and used > high * capacity)
