"""The tracker as a service: it follows a real catalogue, and real BitTorrent clients use it."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import quote_from_bytes

import aiohttp
import libtorrent as lt
import pytest
from support import (
    ENDORSER_DN,
    RunningCatalogue,
    free_port,
    publish_and_wait,
    run_until_file,
    running_seeder,
    start_tracker,
    stock_client,
    until,
    write_image,
)

from distributor.tracker.server import Tracker, TrackerConfig
from vmic.catalogue_source import load_follower
from vmic.errors import ConfigError
from vmic.pki import KeyPaths


async def get(http: aiohttp.ClientSession, url: str) -> dict[bytes, Any]:
    async with http.get(url) as response:
        assert response.status == 200
        return lt.bdecode(await response.read())


def announce_query(info_hash: bytes, port: int, left: int = 10, **extra: str) -> str:
    params = {"info_hash": quote_from_bytes(info_hash), "peer_id": quote_from_bytes(b"-TS0001-" + bytes(12)),
              "port": str(port), "uploaded": "0", "downloaded": "0", "left": str(left), **extra}
    return "&".join(f"{k}={v}" for k, v in params.items())


async def test_private_tracker_answers_only_for_catalogued_torrents(site, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                                  http: aiohttp.ClientSession) -> None:
    catalogue, tracker, announce_url = site
    _, torrent = await publish_and_wait(catalogue, write_image(tmp_path / "a.raw", 2**20), tracker)
    info_hash = bytes.fromhex(torrent.btih)

    unknown = await get(http, f"{announce_url}?{announce_query(b'x' * 20, 7000)}")
    assert unknown[b"failure reason"].startswith(b"unknown torrent")
    malformed = await get(http, f"{announce_url}?info_hash=abc&port=x")
    assert b"failure reason" in malformed

    first = await get(http, f"{announce_url}?{announce_query(info_hash, 7001, event='started')}")
    assert first[b"interval"] == 5 and first[b"peers"] == b""
    second = await get(http, f"{announce_url}?{announce_query(info_hash, 7002, left=0, event='completed')}")
    assert second[b"peers"] == bytes([127, 0, 0, 1]) + (7001).to_bytes(2, "big")
    assert (second[b"complete"], second[b"incomplete"]) == (1, 1)

    scrape_url = announce_url.replace("/announce", "/scrape")
    files = (await get(http, f"{scrape_url}?info_hash={quote_from_bytes(info_hash)}"))[b"files"]
    assert files == {info_hash: {b"complete": 1, b"incomplete": 1, b"downloaded": 1}}

    # revoked: the tracker stops answering for it as soon as the catalogue's list changes
    async with catalogue.client() as client:
        await client.revoke(catalogue.catalogue.listing.current.image_list.images[0].identifier)
    for _ in range(100):
        if info_hash not in tracker.allowlist:
            break
        await asyncio.sleep(0.05)
    gone = await get(http, f"{announce_url}?{announce_query(info_hash, 7001)}")
    assert gone[b"failure reason"].startswith(b"unknown torrent")


@pytest.mark.parametrize("client", ["aria2c", "transmission-cli"])
async def test_stock_client_on_another_host_gets_the_image_from_our_seeder_through_our_tracker(
        lab, catalogue_factory, keys: KeyPaths, tmp_path: Path, client: str) -> None:  # type: ignore[no-untyped-def]
    """The client runs on a host of its own (a network namespace), which cannot reach the
    catalogue's web seed on loopback: only our seeder, found through our tracker, can deliver.
    (Transmission 3.00 would not even try a peer on 127.0.0.0/8: it calls them martian.)"""
    if shutil.which(client) is None:
        pytest.skip(f"{client} is not installed (tools/test installs it)")
    port = free_port()
    catalogue = await catalogue_factory(trackers=f"http://{lab.gateway}:{port}/announce")
    tracker, runner = await start_tracker(catalogue.url, keys, lab.gateway, port)
    node = lab.add_host()
    try:
        async with running_seeder(catalogue, keys, tmp_path / "seeder", listen=f"{lab.gateway}:{free_port()}"):
            record, torrent = await publish_and_wait(catalogue, write_image(tmp_path / "a.raw", 6 * 2**20 + 11),
                                                     tracker)
            swarm_key = bytes.fromhex(torrent.btih)
            await until(lambda: swarm_key in tracker.swarms.swarms and tracker.swarms.swarms[swarm_key].complete >= 1,
                        "the seeder hears of the image and announces itself", 10)
            (tmp_path / "a.torrent").write_bytes(torrent.data)
            out = tmp_path / "out"
            await run_until_file(node.command(*stock_client(client, tmp_path / "a.torrent", out)),
                                 out / record["sha512"], record["sha512"])
        peers = tracker.swarms.swarms[swarm_key].peers
        assert any(ip == node.address for ip, _ in peers), "the client announced itself from its own host"
    finally:
        await runner.cleanup()


async def test_distributor_tracker_command(catalogue: RunningCatalogue, keys: KeyPaths, tmp_path: Path,
                                           http: aiohttp.ClientSession) -> None:
    import sys

    port = free_port()
    (tmp_path / "d.toml").write_text(
        f'[tracker]\nlisten = "127.0.0.1:{port}"\n[tracker.catalogue]\nurl = "{catalogue.url}"\nca = "{keys.ca_dir}"\n'
        f'endorser_dn = "{ENDORSER_DN}"\n[tracker.topology]\n"gva/r1" = ["127.0.0.0/8"]\n')
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "distributor.cli", "tracker", "-c",
                                                str(tmp_path / "d.toml"), stderr=asyncio.subprocess.PIPE)
    try:
        assert proc.stderr is not None
        while b"tracker.list_accepted" not in await asyncio.wait_for(proc.stderr.readline(), 20):
            pass  # it read and verified the catalogue's list
        answer = await get(http, f"http://127.0.0.1:{port}/announce?{announce_query(b'y' * 20, 7000)}")
        assert answer[b"failure reason"].startswith(b"unknown torrent")
    finally:
        proc.terminate()
        await proc.wait()

    (tmp_path / "bad.toml").write_text('[tracker]\nlisten = "x"\n')
    bad = await asyncio.create_subprocess_exec(sys.executable, "-m", "distributor.cli", "tracker", "-c",
                                               str(tmp_path / "bad.toml"), stderr=asyncio.subprocess.PIPE)
    _, err = await bad.communicate()
    assert bad.returncode == 2 and err.decode().count("\n") == 1 and err.startswith(b"distributor: error: ")


async def test_the_tracker_reads_at_most_its_configured_list_cap(keys: KeyPaths) -> None:
    """The tracker follows the catalogue with the same list source as nodes: an endless list
    is refused as list_too_large at ``max_list_bytes`` (here 64 KiB), before parsing."""
    from partner_sim import PartnerSimulator

    sim = await PartnerSimulator.start(keys)
    try:
        sim.endless = True
        config = load_follower(TrackerConfig, "tracker", {"catalogue": {
            "url": sim.url, "ca": str(keys.ca_dir), "endorser_dn": ENDORSER_DN, "max_list_bytes": "64K"}})
        follower = Tracker.from_config(config).follower
        assert follower.source.max_list_bytes == 2**16
        async with aiohttp.ClientSession() as session:
            assert await follower.fetch(session) is None
        assert follower.refused is not None and follower.refused.code == "list_too_large"
        assert "65536" in str(follower.refused)
    finally:
        await sim.stop()


def test_a_list_cap_out_of_bounds_is_a_config_error(keys: KeyPaths) -> None:
    with pytest.raises(ConfigError, match=r"\[tracker.catalogue\]: max_list_bytes must be between 4K and 1G"):
        load_follower(TrackerConfig, "tracker", {"catalogue": {
            "url": "http://x", "ca": str(keys.ca_dir), "endorser_dn": ENDORSER_DN, "max_list_bytes": 10}})
