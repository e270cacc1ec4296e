"""The tracker as a service: it follows a real catalogue, and real BitTorrent clients use it."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import quote_from_bytes

import aiohttp
import libtorrent as lt
import pytest
from aiohttp import web
from support import ENDORSER_DN, RunningCatalogue, free_port, publish_and_wait, running_seeder, write_image

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


@pytest.mark.skipif(shutil.which("aria2c") is None, reason="aria2c is not installed (apt-get install aria2)")
async def test_aria2c_gets_the_image_from_our_seeder_through_our_tracker_without_the_web_seed(
        site, keys: KeyPaths, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    catalogue, tracker, _ = site
    async with running_seeder(catalogue, keys, tmp_path / "seeder"):
        record, torrent = await publish_and_wait(catalogue, tracker, write_image(tmp_path / "a.raw", 6 * 2**20 + 11))
        for _ in range(200):  # the seeder hears of the image and announces itself
            swarm = tracker.swarms.swarms.get(bytes.fromhex(torrent.btih))
            if swarm is not None and swarm.complete >= 1:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the seeder never announced the new image")
        (tmp_path / "a.torrent").write_bytes(torrent.data)
        await catalogue.runner.shutdown()  # the web seed goes away: only the seeder has the bytes now
        await catalogue.runner.cleanup()
        catalogue.runner = web.AppRunner(web.Application())
        await catalogue.runner.setup()
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
    assert hashlib.sha512((out / record["sha512"]).read_bytes()).hexdigest() == record["sha512"]


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
        assert proc.stderr is not None
        while b"tracker.list_accepted" not in await asyncio.wait_for(proc.stderr.readline(), 20):
            pass  # it read and verified the catalogue's list
        answer = await get(http, f"http://127.0.0.1:{port}/announce?{announce_query(b'y' * 20, 7000)}")
        assert answer[b"failure reason"].startswith(b"unknown torrent")
    finally:
        proc.terminate()
        await proc.wait()

    (tmp_path / "bad.toml").write_text('[tracker]\nport = "x"\n')
    bad = await asyncio.create_subprocess_exec(sys.executable, "-m", "distributor.cli", "tracker", "-c",
                                               str(tmp_path / "bad.toml"), stderr=asyncio.subprocess.PIPE)
    _, err = await bad.communicate()
    assert bad.returncode == 2 and err.decode().count("\n") == 1 and err.startswith(b"distributor: error: ")
