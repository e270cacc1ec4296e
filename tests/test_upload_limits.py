"""Uploads cannot take a catalogue down: per-publisher limits (429/507), a free-space
reserve that keeps revocation and signing working, expiry of abandoned uploads, a
listing of one's own uploads (and the CLI to cancel them), and 507 (never 500) when
the database's disk is full. On a small tmpfs: a disk that really fills."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from support import TOKENS, VMIC, auth, upload_request, write_image


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "small-disk"
    path.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(path)], capture_output=True).returncode:
        pytest.fail("cannot mount a small tmpfs (tools/test runs as root)", pytrace=False)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


async def post(http: aiohttp.ClientSession, url: str, request: dict[str, Any], publisher: str = "alice"
               ) -> tuple[int, Any]:
    async with http.post(f"{url}/api/v1/uploads", json=request, headers=auth(publisher)) as response:
        return response.status, await response.json()


async def send(http: aiohttp.ClientSession, url: str, location: str, data: bytes) -> int:
    headers = {**auth(), "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}
    async with http.patch(f"{url}{location}", data=data, headers=headers) as response:
        return response.status


async def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``vmic`` in a subprocess, while this event loop serves the catalogue."""
    proc = await asyncio.create_subprocess_exec(*VMIC, *args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    return subprocess.CompletedProcess(list(args), proc.returncode or 0, out.decode(), err.decode())


async def test_a_publisher_is_limited_and_its_uploads_are_listed_and_cancelled(
        catalogue_factory: Any, http: aiohttp.ClientSession, tmp_path: Path) -> None:
    catalogue = await catalogue_factory(max_uploads_per_publisher=3, max_upload_bytes_per_publisher=10 * 2**20)
    image = write_image(tmp_path / "a.raw", 2**20)
    locations = []
    for version in ("1", "2", "3"):
        status, body = await post(http, catalogue.url, upload_request(image, version=version))
        assert status == 201, body
        locations.append(body["location"])
    status, body = await post(http, catalogue.url, upload_request(image, version="4"))
    assert status == 429 and body["error"] == "too_many_requests" and "3 open uploads" in body["message"]
    status, body = await post(http, catalogue.url, {**upload_request(image, namespace="bob"), "size": 11 * 2**20},
                              publisher="bob")
    assert status == 507 and "limit of 10485760" in body["message"], body

    async with http.get(f"{catalogue.url}/api/v1/uploads", headers=auth("bob")) as response:
        assert response.status == 200 and await response.json() == [], "bob sees none of alice's uploads"
    listed = await cli("uploads", "list", "--json", "--url", catalogue.url, "--token", TOKENS["alice"])
    assert listed.returncode == 0, listed.stderr
    uploads = json.loads(listed.stdout)
    assert [u["location"] for u in uploads] == locations and {u["offset"] for u in uploads} == {0}
    assert all(dt.datetime.fromisoformat(u["expires"]) > dt.datetime.now(dt.timezone.utc) for u in uploads)
    cancelled = await cli("uploads", "cancel", uploads[0]["id"], "--url", catalogue.url, "--token", TOKENS["alice"])
    assert cancelled.returncode == 0 and "cancelled" in cancelled.stdout, cancelled.stderr
    assert uploads[0]["id"] not in catalogue.catalogue.blobs.part_ids()
    status, body = await post(http, catalogue.url, upload_request(image, version="4"))
    assert status == 201, "one cancelled: room for another"


async def test_abandoned_uploads_expire_with_their_bytes(catalogue_factory: Any, http: aiohttp.ClientSession,
                                                         tmp_path: Path) -> None:
    catalogue = await catalogue_factory(upload_expiry=86400.0)
    image = write_image(tmp_path / "a.raw", 2**20)
    status, body = await post(http, catalogue.url, upload_request(image))
    assert status == 201
    uploads = catalogue.catalogue.uploads
    assert await uploads.expire(dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=23)) == []
    assert await uploads.expire(dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=25)) == [body["id"]]
    assert catalogue.catalogue.blobs.part_ids() == set() and await catalogue.catalogue.store.uploads() == []
    async with http.head(f"{catalogue.url}{body['location']}", headers=auth()) as response:
        assert response.status == 404


async def test_the_free_space_reserve_keeps_revocation_and_signing_working(
        catalogue_factory: Any, http: aiohttp.ClientSession, small_disk: Path, tmp_path: Path) -> None:
    catalogue = await catalogue_factory(data_dir=small_disk / "data", free_space_reserve=16 * 2**20)
    small = write_image(tmp_path / "small.raw", 2**20)
    async with catalogue.client() as client:
        published = await client.upload(small, upload_request(small, name="small"))
    big = write_image(tmp_path / "big.raw", 20 * 2**20)
    for version in ("1", "2"):  # two partial uploads fill the disk down to the reserve's edge
        status, body = await post(http, catalogue.url, upload_request(big, name="big", version=version))
        assert status == 201, body
        assert await send(http, catalogue.url, body["location"], big.read_bytes()[: 20 * 2**20 - 1]) == 204
    status, body = await post(http, catalogue.url, upload_request(big, name="big", version="3"), publisher="alice")
    assert status == 507 and body["error"] == "insufficient_storage" and "kept free" in body["message"], body
    status, body = await post(http, catalogue.url, {**upload_request(small, namespace="bob", name="x"),
                                                    "size": 10 * 2**20}, publisher="bob")
    assert status == 507 and "kept free" in body["message"], "another publisher: 507 too, never 500"
    status, body = await post(http, catalogue.url, upload_request(small, namespace="bob", name="x"), publisher="bob")
    assert status == 201, "what fits above the reserve is still taken"
    version = catalogue.catalogue.listing.current.image_list.version
    async with http.delete(f"{catalogue.url}/api/v1/images/{published['identifier']}", headers=auth()) as response:
        assert response.status == 200, await response.text()
    assert catalogue.catalogue.listing.current.image_list.version > version, "revoked and signed again"
    assert catalogue.catalogue.listing.current.image_list.images == ()


async def test_a_full_database_disk_is_507_and_changes_nothing(catalogue_factory: Any, http: aiohttp.ClientSession,
                                                               small_disk: Path, tmp_path: Path) -> None:
    catalogue = await catalogue_factory(data_dir=small_disk / "data", free_space_reserve=0)
    small = write_image(tmp_path / "small.raw", 2**20)
    async with catalogue.client() as client:
        published = await client.upload(small, upload_request(small, name="small"))
    filler = small_disk / "filler"
    with open(filler, "wb") as out:  # someone else fills the disk to the last byte
        try:
            while True:
                out.write(b"\0" * 2**16)
                out.flush()
        except OSError:
            pass
    try:
        async with http.delete(f"{catalogue.url}/api/v1/images/{published['identifier']}",
                               headers=auth()) as response:
            body = await response.json()
            assert response.status == 507 and body["error"] == "insufficient_storage", body
        status, body = await post(http, catalogue.url, upload_request(small, name="other"))
        assert status == 507, body
        assert [i.identifier for i in catalogue.catalogue.listing.current.image_list.images] == \
            [published["identifier"]], "nothing half-done: the image is still listed"
    finally:
        filler.unlink()
    async with http.delete(f"{catalogue.url}/api/v1/images/{published['identifier']}", headers=auth()) as response:
        assert response.status == 200, "with room again, revocation works"
