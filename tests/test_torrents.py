"""Every catalogued image gets a torrent; stock clients download it via the catalogue's web seed."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import aiohttp
import libtorrent as lt
import pytest
from support import RunningCatalogue, publish_and_wait, run_until_file, stock_client, write_image

from vmic.torrents import carried_bytes, piece_size_for, touched_blocks

KiB, MiB, GiB = 2**10, 2**20, 2**30


@pytest.mark.parametrize(("size", "data", "piece"), [
    (1, None, 256 * KiB), (256 * MiB, None, 256 * KiB), (512 * MiB + 1, None, 512 * KiB), (2 * GiB, None, MiB),
    (20 * GiB, None, 16 * MiB), (100 * GiB, None, 16 * MiB),
    # sparse: counted by the data
    (4 * GiB, 512 * MiB, 256 * KiB), (20 * GiB, 2 * GiB, MiB), (20 * GiB, 20 * GiB + 4096, 16 * MiB),
    # ... but never more than 65,536 pieces in all
    (100 * GiB, GiB, 2 * MiB), (64 * GiB, 0, MiB),
])
def test_piece_size_policy(size: int, data: int | None, piece: int) -> None:
    assert piece_size_for(size, data) == piece


#: a file system's image: 2 GiB of data from the start, a 4 KiB block of metadata every 128 MiB
FILE_SYSTEM = [(0, 2 * GiB)] + [(g * 128 * MiB, g * 128 * MiB + 4 * KiB) for g in range(16, 160)]


@pytest.mark.parametrize(("extents", "piece", "size", "carried"), [
    ([], MiB, 10 * MiB, 0),
    ([(0, 1)], MiB, 10 * MiB, MiB),
    ([(MiB - 1, MiB + 1)], MiB, 10 * MiB, 2 * MiB),  # one byte each side of a border: two pieces
    ([(0, 10), (20, 30), (MiB - 1, MiB)], MiB, 10 * MiB, MiB),  # three runs in one piece: once
    ([(0, 10), (2 * MiB, 2 * MiB + 1), (5 * MiB, 5 * MiB)], MiB, 10 * MiB, 2 * MiB),  # an empty run: none
    ([(9 * MiB + 5, 9 * MiB + 6)], MiB, 9 * MiB + 10, 10),  # the short last piece counts what it holds
    ([(0, 9 * MiB + 10)], MiB, 9 * MiB + 10, 9 * MiB + 10),  # dense: the whole image
    (FILE_SYSTEM, MiB, 20 * GiB, 2 * GiB + 144 * MiB),
    (FILE_SYSTEM, 512 * KiB, 20 * GiB, 2 * GiB + 72 * MiB),
])
def test_carried_bytes(extents: list[tuple[int, int]], piece: int, size: int, carried: int) -> None:
    assert carried_bytes(extents, piece, size) == carried


@pytest.mark.parametrize(("extents", "size"), [
    (FILE_SYSTEM, 20 * GiB),
    ([(m * MiB + 5, m * MiB + 4 * KiB) for m in range(0, 1024, 3)], GiB),
    ([(0, 1), (256 * KiB - 1, 256 * KiB + 1), (GiB - 3, GiB - 1)], GiB - 1),  # borders, a short last block
    ([(i * 4 * KiB, i * 4 * KiB + 1) for i in range(0, 8192, 2)], 32 * MiB),  # 4,096 runs: 128 blocks
])
def test_the_blocks_data_touches_carry_what_the_data_does(extents: list[tuple[int, int]], size: int) -> None:
    data, blocks = touched_blocks(extents, size)
    assert data == sum(b - a for a, b in extents) and len(blocks) <= -(-size // (2 * 256 * KiB)) + 1
    for piece in (256 * KiB, 512 * KiB, MiB, 2 * MiB, 4 * MiB, 8 * MiB, 16 * MiB):
        assert carried_bytes(blocks, piece, size) == carried_bytes(extents, piece, size)


@pytest.mark.parametrize(("size", "extents", "piece"), [
    # dense: as by the size alone
    (2 * GiB, [(0, 2 * GiB)], MiB), (20 * GiB, [(0, 20 * GiB)], 16 * MiB),
    # the data in one place: as by the data alone
    (20 * GiB, [(0, 2 * GiB)], MiB), (4 * GiB, [(0, 512 * MiB)], 256 * KiB),
    # metadata every 128 MiB: 1 MiB pieces would carry 7 % of zeros, 512 KiB pieces 3.5 %
    (20 * GiB, FILE_SYSTEM, 512 * KiB),
    # every 64 MiB: 5.5 % at 512 KiB, so 256 KiB
    (8 * GiB, [(0, GiB)] + [(g * 64 * MiB, g * 64 * MiB + 4 * KiB) for g in range(16, 128)], 256 * KiB),
    # every 32 MiB of 20 GiB: 14 % at 512 KiB, but 256 KiB pieces would be more than 65,536
    (20 * GiB, [(0, 2 * GiB)] + [(g * 32 * MiB, g * 32 * MiB + 4 * KiB) for g in range(64, 640)], 512 * KiB),
    # never below 256 KiB: 4 KiB every MiB carries 256 times its data whatever the piece size
    (GiB, [(m * MiB, m * MiB + 4 * KiB) for m in range(1024)], 256 * KiB),
])
def test_piece_size_follows_where_the_data_lies(size: int, extents: list[tuple[int, int]], piece: int) -> None:
    assert piece_size_for(size, sum(b - a for a, b in extents), extents) == piece


async def test_published_image_gets_a_private_torrent_with_web_seed(catalogue: RunningCatalogue,
                                                                   tmp_path: Path) -> None:
    record, torrent = await publish_and_wait(catalogue, write_image(tmp_path / "a.raw", 3 * MiB + 5))
    info = torrent.info
    assert info.info_hashes().has_v1() and not info.info_hashes().has_v2(), "v1 by default"
    assert info.priv()
    assert info.name() == record["sha512"], "named like the blob: a seeder serves the store in place"
    assert info.total_size() == record["size"] and torrent.piece_size == 256 * KiB
    metainfo = lt.bdecode(torrent.data)
    assert metainfo[b"url-list"] in (record["uri"].encode(), [record["uri"].encode()]), "BEP 19 web seed"
    image = catalogue.catalogue.listing.current.image_list.image(record["identifier"])
    assert image is not None
    assert image.extra["vmic:btih"] == torrent.btih and "vmic:btmh" not in image.extra
    assert image.extra["vmic:torrent"] == f"{catalogue.url}/images/{record['identifier']}.torrent"
    assert f"xt=urn:btih:{torrent.btih}" in torrent.magnet()


async def test_hybrid_torrents_on_request(catalogue_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    catalogue = await catalogue_factory(torrent_format="hybrid")
    record, torrent = await publish_and_wait(catalogue, write_image(tmp_path / "a.raw", MiB))
    assert torrent.info.info_hashes().has_v1() and torrent.info.info_hashes().has_v2()
    image = catalogue.catalogue.listing.current.image_list.image(record["identifier"])
    assert image is not None and image.extra["vmic:btmh"] == torrent.btmh
    assert f"urn:btmh:1220{torrent.btmh}" in torrent.magnet()


@pytest.mark.skipif(shutil.which("aria2c") is None, reason="aria2c is not installed (apt-get install aria2)")
async def test_why_hybrid_is_not_the_default_debian_aria2c_gets_its_info_hash_wrong(catalogue_factory,  # type: ignore[no-untyped-def]
                                                                                   tmp_path: Path) -> None:
    catalogue = await catalogue_factory(torrent_format="hybrid")
    _, torrent = await publish_and_wait(catalogue, write_image(tmp_path / "a.raw", MiB))
    (tmp_path / "h.torrent").write_bytes(torrent.data)
    proc = await asyncio.create_subprocess_exec("aria2c", "-S", str(tmp_path / "h.torrent"),
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    out, _ = await proc.communicate()
    shown = next(line.split(":", 1)[1].strip() for line in out.decode().splitlines() if "Info Hash" in line)
    if shown == torrent.btih:
        pytest.fail("this aria2c reads hybrid torrents right: hybrid could become the default (vmic/torrents.py)")


async def test_torrent_of_unknown_or_revoked_image(catalogue: RunningCatalogue, tmp_path: Path,
                                                   http: aiohttp.ClientSession) -> None:
    record, _ = await publish_and_wait(catalogue, write_image(tmp_path / "a.raw", MiB))
    async with catalogue.client() as client:
        await client.revoke(record["identifier"])
    async with http.get(f"{catalogue.url}/images/{record['identifier']}.torrent") as response:
        assert response.status == 410
    async with http.get(f"{catalogue.url}/images/2f6b6a52-8d4f-4f57-9c1e-3d1c0b0f8a61.torrent") as response:
        assert response.status == 404 and (await response.json())["error"] == "not_found"


@pytest.mark.skipif(shutil.which("aria2c") is None, reason="aria2c is not installed (apt-get install aria2)")
async def test_aria2c_downloads_through_the_web_seed(catalogue: RunningCatalogue, tmp_path: Path) -> None:
    record, torrent = await publish_and_wait(catalogue, write_image(tmp_path / "a.raw", 5 * MiB + 123))
    (tmp_path / "a.torrent").write_bytes(torrent.data)
    out = tmp_path / "aria2"
    await run_until_file(stock_client("aria2c", tmp_path / "a.torrent", out), out / record["sha512"], record["sha512"])


@pytest.mark.skipif(shutil.which("transmission-cli") is None,
                    reason="transmission-cli is not installed (apt-get install transmission-cli)")
async def test_transmission_downloads_through_the_web_seed(catalogue: RunningCatalogue, tmp_path: Path) -> None:
    record, torrent = await publish_and_wait(catalogue, write_image(tmp_path / "a.raw", 4 * MiB + 7))
    (tmp_path / "a.torrent").write_bytes(torrent.data)
    out = tmp_path / "downloads"
    await run_until_file(stock_client("transmission-cli", tmp_path / "a.torrent", out, bind="127.0.0.1"),
                         out / record["sha512"], record["sha512"])


def test_libtorrent_reads_what_the_catalogue_serves(tmp_path: Path) -> None:
    from vmic.torrents import make_torrent

    blob = write_image(tmp_path / ("f" * 128), 700 * KiB)
    torrent = make_torrent(blob, "http://127.0.0.1:1/images/x", ("http://127.0.0.1:2/announce",))
    metainfo = lt.bdecode(torrent.data)
    assert metainfo[b"announce"] == b"http://127.0.0.1:2/announce"
    assert torrent.info.num_pieces() == 3
