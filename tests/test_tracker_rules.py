"""The tracker's rules, without sockets: request parsing, topology, peer selection, expiry."""

from __future__ import annotations

import random
from urllib.parse import quote_from_bytes

import pytest

from distributor.tracker.announce import MAX_NUMWANT, TrackerError, parse_announce, parse_scrape
from distributor.tracker.server import _peers_field
from distributor.tracker.swarm import Peer, Swarms, packed_address
from distributor.tracker.topology import Location, Topology

HASH = bytes(range(20))
PEER = b"-LT2010-" + b"\xff" * 12


def query(**params: object) -> str:
    base: dict[str, object] = {"info_hash": HASH, "peer_id": PEER, "port": 6881, "uploaded": 0, "downloaded": 0,
                               "left": 100}
    base.update(params)
    return "&".join(f"{k}={quote_from_bytes(v) if isinstance(v, bytes) else v}" for k, v in base.items() if v is not None)


def test_raw_bytes_survive_percent_decoding() -> None:
    request = parse_announce(query(event="started", numwant=10), "10.0.0.7")
    assert (request.info_hash, request.peer_id, request.ip, request.port) == (HASH, PEER, "10.0.0.7", 6881)
    assert request.event == "started" and request.numwant == 10 and request.compact and not request.seeding


@pytest.mark.parametrize(("q", "reason"), [
    (query(info_hash=None), "missing info_hash"),
    (query(info_hash=b"short"), "info_hash must be 20 bytes"),
    (query(peer_id=b"x" * 21), "peer_id must be 20 bytes"),
    (query(port=None), "missing port"),
    (query(port=0), "port must be between 1 and 65535"),
    (query(port=70000), "port must be between"),
    (query(port="http"), "port must be a whole number"),
    (query(left=-1), "left must be between"),
    (query(event="paused"), "unknown event"),
    (query() + "&info_hash=" + quote_from_bytes(HASH), "more than once"),
    ("=\u0100", "not ASCII"),  # the fuzzer's find: was a UnicodeEncodeError
])
def test_malformed_announces_get_a_reason(q: str, reason: str) -> None:
    with pytest.raises(TrackerError, match=reason):
        parse_announce(q, "10.0.0.7")


def test_numwant_is_capped_and_compact_is_the_default() -> None:
    request = parse_announce(query(numwant=10_000, compact=0, no_peer_id=1), "::1")
    assert request.numwant == MAX_NUMWANT and not request.compact and request.no_peer_id and request.ip == "::1"


def test_scrape_reads_every_info_hash() -> None:
    other = b"\x01" * 20
    assert parse_scrape(f"info_hash={quote_from_bytes(HASH)}&info_hash={quote_from_bytes(other)}") == [HASH, other]
    with pytest.raises(TrackerError):
        parse_scrape("info_hash=abc")


def test_topology_most_specific_subnet_wins() -> None:
    topology = Topology.from_config({"gva/r1": ["10.1.0.0/16"], "gva/r2": ["10.1.2.0/24"], "bdp/r1": ["fd00::/64"]})
    assert topology.locate("10.1.2.3") == Location("gva", "r2")
    assert topology.locate("10.1.9.9") == Location("gva", "r1")
    assert topology.locate("fd00::5") == Location("bdp", "r1")
    assert topology.locate("192.0.2.1") == Location()
    assert Location("gva", "r1").distance(Location("gva", "r1")) == 0
    assert Location("gva", "r1").distance(Location("gva", "r2")) == 1
    assert Location().distance(Location()) == 2, "unknown places are never near"


def make_swarms(clock: list[float], random_share: float = 0.25) -> Swarms:
    topology = Topology.from_config({"s/a": ["10.0.1.0/24"], "s/b": ["10.0.2.0/24"], "t/c": ["10.9.0.0/24"]})
    return Swarms(topology, peer_expiry=60, random_share=random_share, rng=random.Random(7), clock=lambda: clock[0])


def announce(swarms: Swarms, ip: str, left: int = 100, event: str = "", numwant: int = 50) -> list[Peer]:
    return swarms.announce(parse_announce(query(left=left, event=event, numwant=numwant), ip))[1]


def test_peers_in_the_same_rack_come_first_then_the_site_with_a_random_share() -> None:
    swarms = make_swarms([0.0])
    for n in range(1, 11):
        announce(swarms, f"10.0.1.{n}")  # rack s/a
        announce(swarms, f"10.0.2.{n}")  # rack s/b, same site
        announce(swarms, f"10.9.0.{n}")  # another site
    answer = announce(swarms, "10.0.1.100", numwant=12)
    racks = [p.location.rack for p in answer]
    assert len(answer) == 12
    assert racks[:9] == ["a"] * 9, "the nearest-first part: nine peers from the same rack"
    assert len(racks[9:]) == 3, "a quarter of the answer is drawn at random from the rest"
    assert set(racks[9:]) <= {"a", "b", "c"}
    # over many answers the random share reaches other racks and sites: no group is starved
    seen = {p.location.rack for _ in range(20) for p in announce(swarms, "10.0.1.100", numwant=12)}
    assert seen == {"a", "b", "c"}


def test_without_a_random_share_answers_are_strictly_nearest_first() -> None:
    swarms = make_swarms([0.0], random_share=0.0)
    for n in range(1, 6):
        announce(swarms, f"10.0.2.{n}")
        announce(swarms, f"10.9.0.{n}")
    racks = [p.location.rack for p in announce(swarms, "10.0.2.100", numwant=5)]
    assert racks == ["b"] * 5


def test_seeds_get_only_leechers_and_stopped_peers_leave() -> None:
    swarms = make_swarms([0.0])
    announce(swarms, "10.0.1.1", left=0)  # a seed
    announce(swarms, "10.0.1.2", left=50)  # a leecher
    assert [p.ip for p in announce(swarms, "10.0.1.3", left=0)] == ["10.0.1.2"]
    announce(swarms, "10.0.1.2", event="stopped")
    assert announce(swarms, "10.0.1.4", left=0) == []
    swarm = swarms.swarms[HASH]
    assert (swarm.complete, swarm.incomplete) == (3, 0)


def test_completed_events_count_and_silent_peers_expire() -> None:
    clock = [0.0]
    swarms = make_swarms(clock)
    announce(swarms, "10.0.1.1", left=0, event="completed")
    clock[0] = 30.0
    announce(swarms, "10.0.1.2")
    clock[0] = 70.0  # the first peer has been silent for 70 s > 60 s
    assert [p.ip for p in announce(swarms, "10.0.1.3")] == ["10.0.1.2"]
    assert swarms.swarms[HASH].downloaded == 1
    clock[0] = 1000.0
    swarms.expire()
    assert swarms.swarms == {}


def test_compact_answers_split_ipv4_and_ipv6() -> None:
    peers = [Peer(PEER, ip, port, 0, Location(), 0.0, packed_address(ip, port))
             for ip, port in (("10.0.0.1", 6881), ("fd00::1", 51413))]
    compact = _peers_field(peers, parse_announce(query(), "10.0.0.9"))
    assert compact[b"peers"] == bytes([10, 0, 0, 1]) + (6881).to_bytes(2, "big")
    assert compact[b"peers6"] == bytes.fromhex("fd000000000000000000000000000001") + (51413).to_bytes(2, "big")
    dicts = _peers_field(peers, parse_announce(query(compact=0), "10.0.0.9"))
    assert dicts[b"peers"][1] == {b"ip": b"fd00::1", b"port": 51413, b"peer id": PEER}


def test_allowlist_takes_v1_and_truncated_v2_hashes_from_the_list() -> None:
    import datetime as dt

    from distributor.tracker.server import Allowlist
    from vmic.imagelist.model import Endorser, Image, ImageList

    now = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    image = Image(identifier="i", uri="u", size=1, sha512="a" * 128, version="1",
                  extra={"vmic:btih": "11" * 20, "vmic:btmh": "22" * 32})
    plain = Image(identifier="j", uri="u", size=1, sha512="b" * 128, version="1")  # no torrent yet
    allowlist = Allowlist()
    allowlist.update(ImageList("l", 4, now, now, Endorser("d", "c"), (image, plain)))
    assert allowlist.hashes == {b"\x11" * 20, b"\x22" * 20} and allowlist.list_version == 4


def test_without_topology_large_swarms_are_sampled_and_silent_peers_skipped() -> None:
    clock = [0.0]
    swarms = Swarms(peer_expiry=60, rng=random.Random(3), clock=lambda: clock[0])
    for n in range(300):
        announce(swarms, f"10.1.{n // 250}.{n % 250 + 1}", left=n % 2)
    clock[0] = 100.0  # all of them silent now
    for n in range(300, 600):
        announce(swarms, f"10.2.{(n - 300) // 250}.{n % 250 + 1}")
    answer = announce(swarms, "10.3.0.1", numwant=20)
    assert len(answer) == 20 and len({p.ip for p in answer}) == 20
    assert all(p.ip.startswith("10.2.") for p in answer), "silent peers are never handed out"
    seed_answer = announce(swarms, "10.3.0.2", left=0, numwant=20)
    assert all(p.left > 0 for p in seed_answer)


def test_a_small_swarm_is_not_handed_out_whole_when_racks_are_known() -> None:
    """Four peers in the requester's rack, four in another: it gets its rack, plus a quarter
    of the answer from farther away (so racks stay connected, but most bytes stay near)."""
    swarms = make_swarms([0.0])
    for n in range(1, 5):
        announce(swarms, f"10.0.1.{n}")  # rack s/a
        announce(swarms, f"10.9.0.{n}")  # another site
    answer = announce(swarms, "10.0.1.100")
    racks = [p.location.rack for p in answer]
    assert racks.count("a") == 4 and racks.count("c") == 2, racks  # ceil(8 * 0.25) = 2 far peers
    alone = announce(swarms, "10.0.2.100")  # rack s/b: no one in its rack, so its site counts as near
    assert [p.location.rack for p in alone].count("a") == 5


def test_one_address_cannot_fill_a_swarm_with_ports() -> None:
    """1,500 ports from one address once filled every answer with fake peers: the cap
    refuses more than max_peers_per_address new ones, updates of known ones still count."""
    swarms = Swarms(max_peers_per_address=3, rng=random.Random(1))
    for port in (1001, 1002, 1003):
        swarms.announce(parse_announce(query(port=port), "10.0.1.9"))
    with pytest.raises(TrackerError, match="too many peers from 10.0.1.9 in this swarm"):
        swarms.announce(parse_announce(query(port=1004), "10.0.1.9"))
    swarms.announce(parse_announce(query(port=1001, left=0), "10.0.1.9"))  # a known peer announces again
    swarms.announce(parse_announce(query(port=1001, event="stopped"), "10.0.1.9"))
    swarms.announce(parse_announce(query(port=1004), "10.0.1.9"))  # room again after one left
    swarms.announce(parse_announce(query(port=1001), "10.0.1.10"))  # another address has its own room
    assert sorted(swarms.swarms[HASH].per_address.items()) == [("10.0.1.10", 1), ("10.0.1.9", 3)]


@pytest.mark.parametrize(("claims", "counted"), [
    # (address, name) in order -> the names each address is recorded with
    ([("10.0.1.1", "hv001")], {"10.0.1.1": "hv001"}),
    ([("10.0.1.1", "hv001"), ("10.0.1.66", "hv001")], {"10.0.1.1": "hv001", "10.0.1.66": ""}),
    ([("10.0.1.1", "hv001"), ("10.0.1.1", "hv001")], {"10.0.1.1": "hv001"}),
    ([("10.0.1.66", "hv001"), ("10.0.1.1", "hv001")], {"10.0.1.66": "hv001", "10.0.1.1": ""}),
])
def test_a_node_name_counts_only_from_the_address_that_first_announced_it(
        claims: list[tuple[str, str]], counted: dict[str, str]) -> None:
    swarms = Swarms(rng=random.Random(1))
    for ip, name in claims:
        swarms.announce(parse_announce(query(left=0), ip), name)
    assert {p.ip: p.name for p in swarms.swarms[HASH].peers.values()} == counted


def test_a_name_is_free_again_once_its_address_left() -> None:
    swarms = Swarms(rng=random.Random(1))
    swarms.announce(parse_announce(query(), "10.0.1.1"), "hv001")
    swarms.announce(parse_announce(query(event="stopped"), "10.0.1.1"), "hv001")
    swarms.announce(parse_announce(query(), "10.0.1.2"), "hv001")  # the node moved
    assert [p.name for p in swarms.swarms[HASH].peers.values()] == ["hv001"]
