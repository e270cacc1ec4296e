"""The node's planner, table-driven: what to fetch, what waits and why. Pure: no
sockets, no disks, no clock but the one in each row."""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

import pytest

from nodecache.config import Selection
from nodecache.planner import Listed, Policy, find_listing, held_states, listed_images, plan
from vmic.imagelist.extensions import BTIH, NAME, NAMESPACE, PREHEAT, TORRENTS
from vmic.imagelist.model import Endorser, Image, ImageList

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.timezone.utc)


def image(key: str, version: str = "1", os: str = "Debian", **extra: Any) -> Image:
    return Image(identifier=f"id-{key}", uri=f"http://c/{key}", size=1, sha512=hashlib.sha512(key.encode()).hexdigest(), version=version,
                 title=f"alice/{key}", os=os, extra={NAMESPACE: "alice", NAME: key.rstrip("0123456789"), **extra})


A, B = image("a"), image("b", os="CentOS")
A2, A3 = image("a2", version="2"), image("a3", version="3")
PRE = image("p", os="CentOS", **{PREHEAT: {"nodes": ["node-1"]}})
TORRENTED = image("t", **{BTIH: "00" * 20})
POLICY = Policy(Selection(), "node-1", retry_seconds=300, torrent_wait=30)
DEBIAN_ONLY = Policy(Selection(os=("Debian",)), "node-1", retry_seconds=300, torrent_wait=30)
NEWEST = Policy(Selection(latest=1), "node-1", retry_seconds=300, torrent_wait=30)
NOTHING = Policy(Selection(none=True), "node-1", retry_seconds=300, torrent_wait=30)


def listed(*images: Image, torrents: bool = False, expired: tuple[Image, ...] = ()) -> dict[tuple[str, str], Listed]:
    entries = [Listed(i, "http://c", False, torrents) for i in images]
    entries += [Listed(i, "http://c", True, torrents) for i in expired]
    return {e.key: e for e in entries}


@pytest.mark.parametrize("entries, held, running, failed_at, first_seen, now, policy, expected", [
    # selection
    (listed(A, B), {}, set(), {}, {}, 0, POLICY, {"a": "fetch", "b": "fetch"}),
    (listed(A, B), {}, set(), {}, {}, 0, DEBIAN_ONLY, {"a": "fetch"}),
    (listed(A, A2, A3), {}, set(), {}, {}, 0, NEWEST, {"a3": "fetch"}),
    (listed(A, B), {}, set(), {}, {}, 0, NOTHING, {}),
    (listed(A, expired=(B,)), {}, set(), {}, {}, 0, POLICY, {"a": "fetch"}),
    # a preheat overrides the selection policy
    (listed(A, PRE), {}, set(), {}, {}, 0, DEBIAN_ONLY, {"a": "fetch", "p": "fetch"}),
    (listed(PRE), {}, set(), {}, {}, 0, NOTHING, {"p": "fetch"}),
    # held, refused and evicted images are not fetched again; a running job is not doubled
    (listed(A, B), {A.sha512: "staged", B.sha512: "refused"}, set(), {}, {}, 0, POLICY, {"a": "held", "b": "held"}),
    (listed(A), {A.sha512: "evicted"}, set(), {}, {}, 0, POLICY, {"a": "held"}),
    # evicted because the list dropped it, now listed again (restored): fetched again
    (listed(A), held_states([(A.sha512, "evicted", "revoked")]), set(), {}, {}, 0, POLICY, {"a": "fetch"}),
    (listed(A), held_states([(A.sha512, "evicted", "expired")]), set(), {}, {}, 0, POLICY, {"a": "fetch"}),
    (listed(A), held_states([(A.sha512, "evicted", "space")]), set(), {}, {}, 0, POLICY, {"a": "held"}),
    (listed(A), {A.sha512: "fetching"}, {A.sha512}, {}, {}, 0, POLICY, {"a": "running"}),
    (listed(A), {A.sha512: "failed"}, set(), {}, {}, 0, POLICY, {"a": "fetch"}),
    # backoff after a failure
    (listed(A), {A.sha512: "failed"}, set(), {A.sha512: 100.0}, {}, 399.0, POLICY, {"a": "retry_later"}),
    (listed(A), {A.sha512: "failed"}, set(), {A.sha512: 100.0}, {}, 400.0, POLICY, {"a": "fetch"}),
    # waiting for the torrent where the catalogue makes torrents
    (listed(A, torrents=True), {}, set(), {}, {}, 50.0, POLICY, {"a": "torrent_wait"}),
    (listed(A, torrents=True), {}, set(), {}, {A.sha512: 10.0}, 39.0, POLICY, {"a": "torrent_wait"}),
    (listed(A, torrents=True), {}, set(), {}, {A.sha512: 10.0}, 40.0, POLICY, {"a": "fetch"}),
    (listed(TORRENTED, torrents=True), {}, set(), {}, {}, 0, POLICY, {"t": "fetch"}),
    (listed(A, torrents=False), {}, set(), {}, {}, 0, POLICY, {"a": "fetch"}),
])
def test_plan(entries: dict[tuple[str, str], Listed], held: dict[str, str], running: set[str], failed_at: dict[str, float],
              first_seen: dict[str, float], now: float, policy: Policy, expected: dict[str, str]) -> None:
    result = plan(entries, held, running, failed_at, first_seen, now, policy)
    assert {d.image.identifier[3:]: d.action for d in result.decisions} == expected


def test_bytes_named_by_two_listings_are_fetched_once() -> None:
    bobs = Image(identifier="id-bob", uri="http://c/bob", size=1, sha512=A.sha512, version="1", title="bob/copy",
                 os="Debian", extra={NAMESPACE: "bob", NAME: "copy"})
    result = plan(listed(A, bobs), {}, set(), {}, {}, 0, POLICY)
    assert [(d.image.sha512, d.action) for d in result.decisions] == [(A.sha512, "fetch")]
    assert len(listed(A, bobs)) == 2, "each listing is kept: (catalogue, identifier)"


def test_waits_say_until_when_and_first_sight_is_kept() -> None:
    first = plan(listed(A, torrents=True), {}, set(), {}, {}, 50.0, POLICY)
    [decision] = first.decisions
    assert decision.action == "torrent_wait" and decision.until == 80.0 and first.first_seen == {A.sha512: 50.0}
    again = plan(listed(A, torrents=True), {}, set(), {}, first.first_seen, 79.0, POLICY)
    assert again.decisions[0].action == "torrent_wait"
    gone = plan(listed(B, torrents=True), {}, set(), {}, first.first_seen, 81.0, POLICY)
    assert A.sha512 not in gone.first_seen, "an image no longer listed is forgotten"
    backoff = plan(listed(A), {}, set(), {A.sha512: 100.0}, {}, 200.0, POLICY)
    assert backoff.decisions[0].until == 400.0 and backoff.to_fetch() == []


def make_list(*images: Image, expires: dt.datetime, **extra: Any) -> ImageList:
    return ImageList(identifier="list", version=1, title="t", description="d",
                     endorser=Endorser("CN=e", "CN=ca", "e@x"), created=NOW - dt.timedelta(days=1), expires=expires,
                     images=tuple(images), extra=extra)


@pytest.mark.parametrize("lists, expected", [
    ({"http://c": None}, {}),
    ({"http://c": make_list(A, expires=NOW + dt.timedelta(days=1))}, {"a": (False, False)}),
    ({"http://c": make_list(A, expires=NOW - dt.timedelta(seconds=1))}, {"a": (True, False)}),
    ({"http://c": make_list(image("a", **{"dc:date:expires": "2026-05-01T00:00:00Z"}),
                            expires=NOW + dt.timedelta(days=1))}, {"a": (True, False)}),
    ({"http://c": make_list(A, expires=NOW + dt.timedelta(days=1), **{TORRENTS: True})}, {"a": (False, True)}),
])
def test_listed_images(lists: dict[str, ImageList | None], expected: dict[str, tuple[bool, bool]]) -> None:
    result = listed_images(lists, NOW)
    assert {e.image.identifier[3:]: (e.expired, e.torrents) for e in result.values()} == expected


@pytest.mark.parametrize("wanted, expected", [
    ("id-a", "id-a"),
    ("alice/a", "id-a3"),  # a name: its newest current version (A3 and A2 share the name "a")
    ("id-b", None),  # expired listings are not found
    ("alice/nothing", None),
])
def test_find_listing(wanted: str, expected: str | None) -> None:
    entry = find_listing(listed(A, A2, A3, expired=(B,)), wanted)
    assert (entry.image.identifier if entry else None) == expected
