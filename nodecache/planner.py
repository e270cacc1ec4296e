"""What the node should do next: pure, no I/O, no clock of its own.

Given the lists in force, what the cache holds, the jobs running, the time and the
policy, :func:`plan` says which images to fetch now, which wait (for a retry, or for
their torrent), which are not fetched and why; eviction is :func:`nodecache.evict.plan`.
The daemon applies the answer; tests are tables (``tests/test_planner.py``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from vmic.imagelist.extensions import BTIH, TORRENTS
from vmic.imagelist.model import EXT_EXPIRES, Image, ImageList, parse_date
from vmic.preheat import EXTENSION as PREHEAT
from vmic.preheat import targets

from .config import Selection
from .selection import resolve, select

#: what the cache's record of an image says that keeps the planner from fetching it
#: ("evicted": for space or by an operator; only an explicit ensure brings it back)
NOT_FETCHED = ("staged", "refused", "evicted")
#: eviction reasons that only followed the list: such an image listed again (restored
#: within the catalogue's revoke_grace) is fetched again like a new one
UNLISTED = ("revoked", "expired")


def held_states(records: Iterable[tuple[str, str, str]]) -> dict[str, str]:
    """sha512 -> the state the planner goes by, from (sha512, state, reason) records: an
    image evicted because its list no longer named it is "withdrawn", not "evicted"."""
    return {sha512: "withdrawn" if state == "evicted" and reason in UNLISTED else state
            for sha512, state, reason in records}


@dataclass(frozen=True)
class Listed:
    image: Image
    catalogue: str
    expired: bool
    torrents: bool  #: its catalogue makes torrents (its list says so)

    @property
    def key(self) -> tuple[str, str]:
        return self.catalogue, self.image.identifier


#: a listing: (catalogue URL, image identifier). Two listings may name the same bytes
#: (two publishers, or two catalogues): each keeps its own name and revocation; the
#: bytes are fetched and staged once.
Listings = Mapping[tuple[str, str], Listed]


def listed_images(lists: Mapping[str, ImageList | None], now: dt.datetime) -> dict[tuple[str, str], Listed]:
    """Every image of every list in force, by (catalogue, identifier)."""
    result: dict[tuple[str, str], Listed] = {}
    for url, image_list in lists.items():
        if image_list is None:
            continue
        makes_torrents = image_list.extra.get(TORRENTS) is True
        for image in image_list.images:
            expires = image.extra.get(EXT_EXPIRES)
            own = parse_date(expires, "dc:date:expires") <= now if expires else False
            entry = Listed(image, url, image_list.expires <= now or own, makes_torrents)
            result[entry.key] = entry
    return result


def find_listing(listed: Listings, wanted: str) -> Listed | None:
    """The current listing ``wanted`` names: an identifier, or the newest version of a name
    or title (:func:`nodecache.selection.resolve`)."""
    current = {id(entry.image): entry for entry in listed.values() if not entry.expired}
    image = resolve((entry.image for entry in current.values()), wanted)
    return current[id(image)] if image is not None else None


def by_sha512(listed: Listings) -> dict[str, list[Listed]]:
    """The listings of each image's bytes (current ones first)."""
    result: dict[str, list[Listed]] = {}
    for entry in sorted(listed.values(), key=lambda e: e.expired):
        result.setdefault(entry.image.sha512, []).append(entry)
    return result


@dataclass(frozen=True)
class Policy:
    selection: Selection
    node_name: str
    retry_seconds: float  #: after a failed fetch or stage, wait this long before the next
    torrent_wait: float  #: wait this long for a new image's torrent before fetching by HTTP


@dataclass(frozen=True)
class Decision:
    image: Image
    catalogue: str
    action: str  #: "fetch", "running", "held" (staged/refused/evicted), "retry_later", "torrent_wait"
    until: float | None = None  #: retry_later / torrent_wait: when the planner will say "fetch"


@dataclass(frozen=True)
class FetchPlan:
    decisions: list[Decision]
    #: sha512 -> when first seen without a torrent (the daemon keeps it for the next call)
    first_seen: dict[str, float] = field(default_factory=dict)

    def to_fetch(self) -> list[Decision]:
        return [d for d in self.decisions if d.action == "fetch"]


def wanted(listed: Listings, policy: Policy) -> list[Listed]:
    """The current images this node keeps staged, one listing per sha512: its selection,
    plus every image whose preheat targets this node (a preheat overrides the selection
    policy)."""
    current = {id(entry.image): entry for entry in listed.values() if not entry.expired}
    images = [entry.image for entry in current.values()]
    chosen: dict[str, Listed] = {}
    for image in select(images, policy.selection):
        chosen.setdefault(image.sha512, current[id(image)])
    for image in images:
        if targets(image.extra.get(PREHEAT), policy.node_name, image.identifier):
            chosen.setdefault(image.sha512, current[id(image)])
    return list(chosen.values())


def plan(listed: Listings, held: Mapping[str, str], running: set[str], failed_at: Mapping[str, float],
         first_seen: Mapping[str, float], now: float, policy: Policy) -> FetchPlan:
    """``held``: sha512 -> the record's state; ``running``: sha512s with a job;
    ``failed_at``/``first_seen``/``now``: one monotonic clock."""
    decisions = []
    shas = {entry.image.sha512 for entry in listed.values()}
    seen = {sha: t for sha, t in first_seen.items() if sha in shas}
    for entry in wanted(listed, policy):
        image, sha512 = entry.image, entry.image.sha512
        if sha512 in running:
            decisions.append(Decision(image, entry.catalogue, "running"))
            continue
        if held.get(sha512) in NOT_FETCHED:
            decisions.append(Decision(image, entry.catalogue, "held"))
            continue
        failed = failed_at.get(sha512)
        if failed is not None and now - failed < policy.retry_seconds:
            decisions.append(Decision(image, entry.catalogue, "retry_later", failed + policy.retry_seconds))
            continue
        # Hundreds of nodes fetching a new image from the catalogue at once is what the
        # swarm is there to avoid: where the catalogue makes torrents, wait a little for the
        # list that names this image's torrent before fetching it over plain HTTP.
        if entry.torrents and BTIH not in image.extra:
            first = seen.setdefault(sha512, now)
            if now - first < policy.torrent_wait:
                decisions.append(Decision(image, entry.catalogue, "torrent_wait", first + policy.torrent_wait))
                continue
        decisions.append(Decision(image, entry.catalogue, "fetch"))
    return FetchPlan(decisions, seen)
