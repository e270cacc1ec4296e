"""The tracker's swarms survive a restart (``state_file``): preheat progress and peers are
there at once, not after the next announce interval. The snapshot rules are pure and
table-tested; one test restarts a real tracker behind a real catalogue."""

from __future__ import annotations

import os
import random
import stat
from pathlib import Path
from typing import Any
from urllib.parse import quote_from_bytes

import aiohttp
import pytest
from aiohttp import web
from support import ENDORSER_DN, free_port, publish_and_wait, write_image

from distributor.tracker.announce import Announce
from distributor.tracker.server import Tracker, TrackerConfig, make_app
from distributor.tracker.snapshot import restore, snapshot
from distributor.tracker.swarm import Swarms
from vmic.catalogue_source import CatalogueSource
from vmic.pki import KeyPaths

HASH, OTHER = bytes(range(20)), bytes(range(1, 21))


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def announce(swarms: Swarms, ip: str, port: int, left: int, name: str = "", info_hash: bytes = HASH) -> None:
    swarms.announce(Announce(info_hash, bytes([port % 256]) * 20, ip, port, 0, 0, left, "", 50, True, False), name)


def test_a_snapshot_restores_peers_names_and_ages_on_another_clock() -> None:
    before = Swarms(peer_expiry=900, clock=Clock(1000.0), rng=random.Random(1))
    announce(before, "10.0.0.1", 6881, 0, "hv-1")
    before.clock.now = 1100.0  # type: ignore[attr-defined]
    announce(before, "10.0.0.2", 6881, 500, "hv-2")
    announce(before, "2001:db8::3", 6881, 7, "", OTHER)
    saved = snapshot(before, wall_now=50_000.0)

    after = Swarms(peer_expiry=900, clock=Clock(7.0))  # a new process: its monotonic clock starts anew
    assert restore(after, saved, wall_now=50_060.0) == 3  # a minute later
    swarm = after.swarms[HASH]
    ages = {p.name: round(7.0 - p.last_seen) for p in swarm.peers.values()}
    assert ages == {"hv-1": 160, "hv-2": 60}
    assert swarm.complete == 1 and swarm.names == {"hv-1": "10.0.0.1", "hv-2": "10.0.0.2"}
    assert after.swarms[OTHER].peers[("2001:db8::3", 6881)].ipv6


@pytest.mark.parametrize("damage, restored", [
    (lambda d: d["peers"][0].update(seen=0.0), 1),  # expired while the tracker was down: dropped
    (lambda d: d["peers"][0].update(ip="not-an-address"), 1),
    (lambda d: d["peers"][0].update(info_hash="abcd"), 1),
    (lambda d: d["peers"][0].update(port=0), 1),
    (lambda d: d["peers"][0].update(left=-1), 1),
    (lambda d: d["peers"][0].update(name="../etc"), 2),  # kept, without the name
    (lambda d: d["peers"][0].pop("peer_id"), 1),
    (lambda d: d.update(version=99), 0),
    (lambda d: d.update(peers="many"), 0),
    (lambda d: d["downloaded"].update(zz=5), 2),
])
def test_a_damaged_snapshot_restores_what_is_sound(damage: Any, restored: int) -> None:
    before = Swarms(clock=Clock(100.0))
    announce(before, "10.0.0.1", 6881, 0, "hv-1")
    announce(before, "10.0.0.2", 6881, 5, "hv-2")
    saved = snapshot(before, wall_now=10_000.0)
    damage(saved)
    after = Swarms(clock=Clock(1.0))
    assert restore(after, saved, wall_now=10_001.0) == restored
    assert all(p.name in ("", "hv-1", "hv-2") for s in after.swarms.values() for p in s.peers.values())


async def test_a_restarted_tracker_shows_preheat_progress_at_once(catalogue_factory: Any, keys: KeyPaths,
                                                                  tmp_path: Path) -> None:
    listen = f"127.0.0.1:{free_port()}"
    catalogue = await catalogue_factory(trackers=f"http://{listen}/announce")
    state = tmp_path / "tracker" / "swarms.json"
    state.parent.mkdir()
    config = TrackerConfig(CatalogueSource(catalogue.url, keys.ca_dir, ENDORSER_DN), listen=listen, state_file=state)

    async def run() -> tuple[Tracker, web.AppRunner]:
        tracker = Tracker.from_config(config)
        runner = web.AppRunner(make_app(tracker))
        await runner.setup()
        await web.TCPSite(runner, tracker.config.host, tracker.config.port).start()
        return tracker, runner

    tracker, runner = await run()
    try:
        record, torrent = await publish_and_wait(catalogue, write_image(tmp_path / "a.raw", 2**20), tracker)
        query = (f"info_hash={quote_from_bytes(bytes.fromhex(torrent.btih))}&peer_id={'x' * 20}&port=7001"
                 f"&uploaded=0&downloaded=0&left={2**19}")
        async with aiohttp.ClientSession(headers={"User-Agent": "vmic-node/hv-7"}) as http:
            async with http.get(f"http://{listen}/announce?{query}") as response:
                assert response.status == 200
    finally:
        await runner.cleanup()  # a stop: the swarms are written
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o600

    tracker, runner = await run()
    try:  # no node has announced to this process: what it shows comes from the file
        async with catalogue.client(None) as client:
            status = await client.preheat_status(record["identifier"])
        assert status["tracker_error"] is None
        assert [(n["name"], n["done"]) for n in status["nodes"]] == [("hv-7", 0.5)]
    finally:
        await runner.cleanup()
