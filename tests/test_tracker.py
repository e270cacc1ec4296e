"""The tracker as a service: it follows a real catalogue, and real BitTorrent clients use it."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote_from_bytes

import aiohttp
import libtorrent as lt
import pytest
from aiohttp import web
from support import ENDORSER_DN, RunningCatalogue, free_port, upload_request, write_image

from distributor.tracker.server import Tracker, TrackerConfig, make_app
from vmic.pki import KeyPaths
from vmic.torrents import Torrent


@pytest.fixture
async def site(catalogue_factory: Callable[..., Any], keys: KeyPaths) -> AsyncIterator[tuple[RunningCatalogue, Tracker, str]]:
    """A catalogue whose torrents name a tracker, and that tracker following it."""
    port = free_port()
    announce_url = f"http://127.0.0.1:{port}/announce"
    catalogue = await catalogue_factory(trackers=announce_url)
    tracker = Tracker.from_config(TrackerConfig(catalogue_url=catalogue.url, catalogue_ca=keys.ca_dir,
                                                endorser_dn=ENDORSER_DN, port=port, interval=5, min_interval=1))
    runner = web.AppRunner(make_app(tracker))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield catalogue, tracker, announce_url
    await runner.cleanup()


async def publish_and_wait(catalogue: RunningCatalogue, tracker: Tracker, path: Path) -> tuple[dict, Torrent]:
    async with catalogue.client() as client:
        record = await client.upload(path, upload_request(path))
    for _ in range(200):  # torrent made in the background, then the tracker hears of the new list
        image = catalogue.catalogue.listing.current.image_list.image(record["identifier"])
        if image is not None and "vmic:btih" in image.extra and bytes.fromhex(image.extra["vmic:btih"]) in tracker.allowlist:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the tracker never allowed the new torrent")
    async with catalogue.client(None) as client:
        torrent = Torrent.parse((await client.fetch(f"/images/{record['identifier']}.torrent")).body)
    return record, torrent


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
    _, torrent = await publish_and_wait(catalogue, tracker, write_image(tmp_path / "a.raw", 2**20))
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


def seeding_session(blob_dir: Path, torrent: Torrent) -> tuple[lt.session, lt.torrent_handle]:
    """A libtorrent seed serving the catalogue's blob in place (the seeder's way), loopback only."""
    session = lt.session({
        "listen_interfaces": f"127.0.0.1:{free_port()}", "enable_dht": False, "enable_lsd": False,
        "enable_upnp": False, "enable_natpmp": False, "enable_outgoing_utp": False, "enable_incoming_utp": False,
        "allow_multiple_connections_per_ip": True, "announce_ip": "127.0.0.1",
    })
    params = lt.add_torrent_params()
    params.ti = lt.torrent_info(torrent.data)
    params.save_path = str(blob_dir)
    params.flags |= lt.torrent_flags.seed_mode
    return session, session.add_torrent(params)


@pytest.mark.skipif(shutil.which("aria2c") is None, reason="aria2c is not installed (apt-get install aria2)")
async def test_aria2c_finds_a_libtorrent_seed_through_the_tracker_without_the_web_seed(site, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    catalogue, tracker, _ = site
    record, torrent = await publish_and_wait(catalogue, tracker, write_image(tmp_path / "a.raw", 6 * 2**20 + 11))
    blob = catalogue.catalogue.blobs.path(record["sha512"])
    session, handle = seeding_session(blob.parent, torrent)
    for _ in range(200):  # the seed announces itself
        swarm = tracker.swarms.swarms.get(bytes.fromhex(torrent.btih))
        if swarm is not None and swarm.complete >= 1:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the libtorrent seed never announced")
    (tmp_path / "a.torrent").write_bytes(torrent.data)
    # the web seed goes away: the bytes can only come from the peer the tracker names
    site_runner = catalogue.runner
    await site_runner.cleanup()
    out = tmp_path / "out"
    proc = await asyncio.create_subprocess_exec(
        "aria2c", "--dir", str(out), "--seed-time=0", "--enable-dht=false", "--enable-dht6=false",
        "--bt-enable-lpd=false", "--enable-peer-exchange=false", "--no-conf", "--file-allocation=none",
        "--summary-interval=0", "--bt-stop-timeout=60", str(tmp_path / "a.torrent"),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        assert await asyncio.wait_for(proc.wait(), 90) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
        del handle, session
    downloaded = out / record["sha512"]
    assert hashlib.sha512(downloaded.read_bytes()).hexdigest() == record["sha512"]
    catalogue.runner = web.AppRunner(web.Application())  # already cleaned up; let the fixture's stop pass
    await catalogue.runner.setup()


async def test_distributor_tracker_command(catalogue: RunningCatalogue, keys: KeyPaths, tmp_path: Path,
                                           http: aiohttp.ClientSession) -> None:
    import sys

    port = free_port()
    (tmp_path / "d.toml").write_text(
        f'[tracker]\ncatalogue_url = "{catalogue.url}"\ncatalogue_ca = "{keys.ca_dir}"\n'
        f'endorser_dn = "{ENDORSER_DN}"\nport = {port}\n[tracker.topology]\n"gva/r1" = ["127.0.0.0/8"]\n')
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "distributor.cli", "tracker", "-c",
                                                str(tmp_path / "d.toml"), stderr=asyncio.subprocess.PIPE)
    try:
        for _ in range(100):
            try:
                answer = await get(http, f"http://127.0.0.1:{port}/announce?{announce_query(b'y' * 20, 7000)}")
                break
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.1)
        else:
            raise AssertionError("the tracker did not start")
        assert answer[b"failure reason"].startswith(b"unknown torrent")
    finally:
        proc.terminate()
        _, err = await proc.communicate()
    assert b"tracker.list_accepted" in err, "it read and verified the catalogue's list"

    (tmp_path / "bad.toml").write_text('[tracker]\nport = "x"\n')
    bad = await asyncio.create_subprocess_exec(sys.executable, "-m", "distributor.cli", "tracker", "-c",
                                               str(tmp_path / "bad.toml"), stderr=asyncio.subprocess.PIPE)
    _, err = await bad.communicate()
    assert bad.returncode == 2 and err.decode().count("\n") == 1 and err.startswith(b"distributor: error: ")
