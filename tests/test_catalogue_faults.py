"""Hostile input and faults: each a clear error, and nothing stored or half-done."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import uuid
from pathlib import Path

import aiohttp
import pytest
from support import (
    TOKENS,
    VMIC,
    CatalogueProcess,
    RunningCatalogue,
    auth,
    config_toml,
    make_config,
    sha512,
    upload_request,
    write_image,
)

from vmic.client import CatalogueClient
from vmic.pki import KeyPaths


async def start(http: aiohttp.ClientSession, url: str, request: dict, publisher: str = "alice") -> str:
    async with http.post(f"{url}/api/v1/uploads", json=request, headers=auth(publisher)) as response:
        assert response.status == 201, await response.text()
        return response.headers["Location"]


async def patch(http: aiohttp.ClientSession, url: str, location: str, data: bytes, offset: int = 0,
                **headers: str) -> aiohttp.ClientResponse:
    all_headers = {**auth(), "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream",
                   **headers}
    async with http.patch(f"{url}{location}", data=data, headers=all_headers) as response:
        await response.read()
        return response


async def error_of(response: aiohttp.ClientResponse) -> tuple[int, str]:
    body = await response.json()
    assert set(body) == {"error", "message"} and body["message"]
    return response.status, body["error"]


def state_of(catalogue: RunningCatalogue) -> tuple[set[str], set[str]]:
    """(part files, blobs) on disk."""
    blobs = catalogue.catalogue.blobs
    return blobs.part_ids(), blobs.sha512s()


async def no_images(catalogue: RunningCatalogue) -> bool:
    return await catalogue.catalogue.store.images() == [] and catalogue.catalogue.listing.current.image_list.images == ()


# --- authentication and authorisation ------------------------------------------------------


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer wrong-token", "Basic YWxpY2U6eA==", f"Token {TOKENS['alice']}"])
async def test_missing_or_invalid_token_is_401(catalogue: RunningCatalogue, http: aiohttp.ClientSession,
                                               tmp_path: Path, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    request = upload_request(write_image(tmp_path / "a.raw", 4096))
    async with http.post(f"{catalogue.url}/api/v1/uploads", json=request, headers=headers) as response:
        assert await error_of(response) == (401, "unauthorized")
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert await no_images(catalogue) and state_of(catalogue) == (set(), set())


async def test_someone_elses_namespace_or_upload_is_403(catalogue: RunningCatalogue, http: aiohttp.ClientSession,
                                                        tmp_path: Path) -> None:
    image_file = write_image(tmp_path / "a.raw", 4096)
    async with http.post(f"{catalogue.url}/api/v1/uploads", json=upload_request(image_file, namespace="bob"),
                         headers=auth("alice")) as response:
        assert await error_of(response) == (403, "forbidden")
    location = await start(http, catalogue.url, upload_request(image_file))
    async with http.patch(f"{catalogue.url}{location}", data=image_file.read_bytes(),
                          headers={**auth("bob"), "Upload-Offset": "0",
                                   "Content-Type": "application/offset+octet-stream"}) as response:
        assert await error_of(response) == (403, "forbidden")
    assert await no_images(catalogue)


# --- sizes, checksums, duplicates, names ----------------------------------------------------


async def test_upload_larger_than_the_limit_is_413(catalogue_factory, http: aiohttp.ClientSession,  # type: ignore[no-untyped-def]
                                                   tmp_path: Path) -> None:
    catalogue = await catalogue_factory(max_upload_bytes=10_000)
    big = write_image(tmp_path / "big.raw", 10_001)
    async with http.post(f"{catalogue.url}/api/v1/uploads", json=upload_request(big), headers=auth()) as response:
        assert await error_of(response) == (413, "too_large")
    # a PATCH that sends more than the declared size is refused whole: HEAD tells the truth
    # (not "complete" with no image), and the upload can still be finished
    small = write_image(tmp_path / "small.raw", 5000)
    location = await start(http, catalogue.url, upload_request(small))
    assert (await patch(http, catalogue.url, location, small.read_bytes()[:1000])).status == 204
    response = await patch(http, catalogue.url, location, small.read_bytes()[1000:] + b"extra", offset=1000)
    assert response.status == 413
    async with http.head(f"{catalogue.url}{location}", headers=auth()) as response:
        assert response.headers["Upload-Offset"] == "1000"
    assert await no_images(catalogue)
    response = await patch(http, catalogue.url, location, small.read_bytes()[1000:], offset=1000)
    assert response.status == 201 and response.headers["Upload-Offset"] == "5000"  # published
    assert [r.sha512 for r in await catalogue.catalogue.store.images()] == [hashlib.sha512(small.read_bytes()).hexdigest()]


async def test_an_upload_id_in_another_spelling_is_refused(catalogue: RunningCatalogue, http: aiohttp.ClientSession,
                                                           tmp_path: Path) -> None:
    """Upload ids are canonical UUIDs: an upper-case twin was taken for the same upload by
    the database but not by the part file (offset 0 on HEAD, a 500 on PATCH)."""
    image_file = write_image(tmp_path / "a.raw", 4096)
    location = await start(http, catalogue.url, upload_request(image_file))
    upper = location.rsplit("/", 1)[0] + "/" + location.rsplit("/", 1)[1].upper()
    async with http.head(f"{catalogue.url}{upper}", headers=auth()) as response:
        assert response.status == 400
    response = await patch(http, catalogue.url, upper, image_file.read_bytes())
    assert response.status == 400
    assert (await patch(http, catalogue.url, location, image_file.read_bytes())).status == 201


async def test_declared_sha512_mismatch_is_422_and_nothing_is_kept(catalogue: RunningCatalogue,
                                                                   http: aiohttp.ClientSession, tmp_path: Path) -> None:
    image_file = write_image(tmp_path / "a.raw", 3 * 2**20)
    request = upload_request(image_file, sha512=hashlib.sha512(b"other bytes").hexdigest())
    location = await start(http, catalogue.url, request)
    async with http.patch(f"{catalogue.url}{location}", data=image_file.read_bytes(),
                          headers={**auth(), "Upload-Offset": "0",
                                   "Content-Type": "application/offset+octet-stream"}) as response:
        assert await error_of(response) == (422, "checksum_mismatch")
    async with http.head(f"{catalogue.url}{location}", headers=auth()) as response:
        assert response.status == 404  # the upload is gone, not resumable into a wrong image
    assert await no_images(catalogue) and state_of(catalogue) == (set(), set())


async def test_duplicate_version_is_409(catalogue: RunningCatalogue, http: aiohttp.ClientSession, tmp_path: Path) -> None:
    image_file = write_image(tmp_path / "a.raw", 4096)
    async with catalogue.client() as client:
        await client.upload(image_file, upload_request(image_file, version="1.0"))
    async with http.post(f"{catalogue.url}/api/v1/uploads", json=upload_request(image_file, version="1.0"),
                         headers=auth()) as response:
        status, code = await error_of(response)
    assert (status, code) == (409, "conflict")
    assert len(await catalogue.catalogue.store.images()) == 1


async def test_two_uploads_racing_for_one_version_publish_once(catalogue: RunningCatalogue,
                                                               http: aiohttp.ClientSession, tmp_path: Path) -> None:
    first, second = write_image(tmp_path / "1.raw", 4096, seed=1), write_image(tmp_path / "2.raw", 4096, seed=2)
    loc1 = await start(http, catalogue.url, upload_request(first, version="9"))
    loc2 = await start(http, catalogue.url, upload_request(second, version="9"))
    assert (await patch(http, catalogue.url, loc1, first.read_bytes())).status == 201
    assert (await patch(http, catalogue.url, loc2, second.read_bytes())).status == 409
    records = await catalogue.catalogue.store.images()
    assert [r.sha512 for r in records] == [hashlib.sha512(first.read_bytes()).hexdigest()]
    assert state_of(catalogue) == (set(), {records[0].sha512})  # the loser's blob is not kept


@pytest.mark.parametrize(
    ("field", "value"),
    [("namespace", "../etc"), ("namespace", "alice/../bob"), ("name", "a/b"), ("name", ".."), ("name", ".hidden"),
     ("version", "1/../../x"), ("version", ""), ("name", "x" * 200), ("identifier", "not-a-uuid"),
     ("identifier", "../../etc/passwd"), ("sha512", "zz"), ("size", -1), ("size", "12"), ("format", "vmdk"),
     ("compression", "rar"), ("unknown_field", 1), ("expires", "soon"),
     # a final newline: re.match with "$" accepted "nl\n" beside "nl"
     ("name", "nl\n"), ("namespace", "alice\n"), ("version", "1\n")],
)
async def test_invalid_names_and_path_tricks_are_400(catalogue: RunningCatalogue, http: aiohttp.ClientSession,
                                                     tmp_path: Path, field: str, value: object) -> None:
    request = upload_request(write_image(tmp_path / "a.raw", 4096))
    request[field] = value
    async with http.post(f"{catalogue.url}/api/v1/uploads", json=request, headers=auth()) as response:
        assert await error_of(response) == (400, "bad_request")
    assert await no_images(catalogue) and state_of(catalogue) == (set(), set())


async def test_error_messages_never_echo_a_huge_input_whole(catalogue: RunningCatalogue, http: aiohttp.ClientSession,
                                                          tmp_path: Path) -> None:
    """A 32 KiB name (well below what a request may carry) comes back cut to a few hundred
    characters, saying how much was left out."""
    request = upload_request(write_image(tmp_path / "a.raw", 4096))
    request["name"] = "x" * 2**15 + "\n"
    async with http.post(f"{catalogue.url}/api/v1/uploads", json=request, headers=auth()) as response:
        body = await response.json()
    assert response.status == 400 and body["error"] == "bad_request"
    assert len(body["message"]) < 500 and "more characters)" in body["message"]


@pytest.mark.parametrize("path", ["/images/..%2F..%2Fcatalogue.sqlite", "/images/not-a-uuid",
                                  "/api/v1/images/%2E%2E", "/api/v1/uploads/..%2F..%2Fcatalogue.sqlite"])
async def test_path_tricks_in_urls_are_400(catalogue: RunningCatalogue, http: aiohttp.ClientSession, path: str) -> None:
    async with http.get(f"{catalogue.url}{path}", headers=auth()) as response:
        assert response.status in (400, 404)
        assert (await response.json())["error"] in ("bad_request", "not_found")


async def test_protocol_mistakes_are_clear_errors(catalogue: RunningCatalogue, http: aiohttp.ClientSession,
                                                  tmp_path: Path) -> None:
    image_file = write_image(tmp_path / "a.raw", 4096)
    location = await start(http, catalogue.url, upload_request(image_file))
    data = image_file.read_bytes()
    assert (await patch(http, catalogue.url, location, data[:100], offset=7)).status == 409
    assert (await patch(http, catalogue.url, location, data, **{"Content-Type": "text/plain"})).status == 415
    assert (await patch(http, catalogue.url, location, data, **{"Upload-Offset": "x"})).status == 400
    async with http.post(f"{catalogue.url}/api/v1/uploads", data=b"{not json", headers=auth()) as response:
        assert await error_of(response) == (400, "bad_request")
    async with http.get(f"{catalogue.url}/no/such/route") as response:
        assert await error_of(response) == (404, "not_found")
    assert (await patch(http, catalogue.url, location, data)).status == 201  # still fine afterwards


# --- dropped connections, full disk, SIGKILL -------------------------------------------------


async def send_and_cut(port: int, location: str, data: bytes, offset: int, send: int, token: str) -> None:
    """Send a PATCH announcing all of ``data`` but only ``send`` bytes, then reset the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (f"PATCH {location} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
            f"Tus-Resumable: 1.0.0\r\nUpload-Offset: {offset}\r\nContent-Type: application/offset+octet-stream\r\n"
            f"Content-Length: {len(data) - offset}\r\n\r\n")
    writer.write(head.encode() + data[offset:offset + send])
    await writer.drain()
    await asyncio.sleep(0.3)
    writer.transport.abort()


async def offset_when_idle(http: aiohttp.ClientSession, url: str, location: str, catalogue=None) -> int:  # type: ignore[no-untyped-def]
    for _ in range(100):
        if catalogue is None or not catalogue.catalogue.uploads._busy:
            async with http.head(f"{url}{location}", headers=auth()) as response:
                return int(response.headers["Upload-Offset"])
        await asyncio.sleep(0.05)
    raise AssertionError("upload stayed busy")


async def test_connection_cut_mid_upload_publishes_nothing_and_resumes(catalogue: RunningCatalogue,
                                                                        http: aiohttp.ClientSession,
                                                                        tmp_path: Path) -> None:
    image_file = write_image(tmp_path / "a.raw", 12 * 2**20 + 5)
    data = image_file.read_bytes()
    location = await start(http, catalogue.url, upload_request(image_file))
    await send_and_cut(catalogue.config.port, location, data, 0, 5 * 2**20, TOKENS["alice"])
    offset = await offset_when_idle(http, catalogue.url, location, catalogue)
    assert 0 < offset <= 5 * 2**20
    assert await no_images(catalogue) and catalogue.catalogue.blobs.sha512s() == set()
    # a second cut, from the new offset
    await send_and_cut(catalogue.config.port, location, data, offset, 3 * 2**20, TOKENS["alice"])
    offset2 = await offset_when_idle(http, catalogue.url, location, catalogue)
    assert offset < offset2 <= offset + 3 * 2**20
    # resume: only the rest is sent, and the image is whole
    async with catalogue.client() as client:
        sent = []
        record = await client.upload(image_file, {}, location=location, progress=sent.append)
    assert sent[0] == offset2
    assert record["sha512"] == hashlib.sha512(data).hexdigest()
    assert state_of(catalogue) == (set(), {record["sha512"]})


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


async def test_disk_full_is_a_clear_error_and_the_store_stays_consistent(catalogue_factory, keys: KeyPaths,  # type: ignore[no-untyped-def]
                                                                         http: aiohttp.ClientSession,
                                                                         tmp_path: Path) -> None:
    small_disk = tmp_path / "small-disk"
    if not _mount_tmpfs(small_disk, "12m"):
        pytest.skip("cannot mount a small tmpfs here (needs root and mount rights) to fill a disk")
    try:
        catalogue = await catalogue_factory(data_dir=small_disk / "data", free_space_reserve=0)
        # as if the disk had room when the upload was checked, and filled up meanwhile
        catalogue.catalogue.uploads.free_bytes = lambda: 2**40
        big = write_image(tmp_path / "big.raw", 16 * 2**20)
        location = await start(http, catalogue.url, upload_request(big))
        async with http.patch(f"{catalogue.url}{location}", data=big.read_bytes(),
                              headers={**auth(), "Upload-Offset": "0",
                                       "Content-Type": "application/offset+octet-stream"}) as response:
            assert await error_of(response) == (507, "insufficient_storage")
            assert "disk is full" in (await response.json())["message"]
        offset = await offset_when_idle(http, catalogue.url, location, catalogue)
        assert catalogue.catalogue.blobs.part_size(location.rsplit("/", 1)[1]) == offset  # no torn tail
        assert await no_images(catalogue) and catalogue.catalogue.blobs.sha512s() == set()
        # the disk grows: the upload resumes from what was kept and publishes the right bytes
        # (the hash ran ahead of the failed write: it is hashed again from the part file)
        subprocess.run(["mount", "-o", "remount,size=40m", str(small_disk)], check=True)
        async with http.patch(f"{catalogue.url}{location}", data=big.read_bytes()[offset:],
                              headers={**auth(), "Upload-Offset": str(offset),
                                       "Content-Type": "application/offset+octet-stream"}) as response:
            assert response.status == 201, await response.text()
            assert (await response.json())["sha512"] == sha512(big)
        # other images are unaffected: a small one still publishes
        small = write_image(tmp_path / "small.raw", 2**20)
        async with catalogue.client() as client:
            record = await client.upload(small, upload_request(small, name="small"))
        assert catalogue.catalogue.blobs.sha512s() == {record["sha512"], sha512(big)}
        await catalogue.stop()
        catalogue.stop = _noop  # type: ignore[method-assign]
    finally:
        subprocess.run(["umount", "-l", str(small_disk)], check=False)


async def _noop() -> None:
    return None


async def test_sigkill_mid_upload_then_restart_finds_a_consistent_store(keys: KeyPaths, tmp_path: Path,
                                                                        http: aiohttp.ClientSession) -> None:
    config = make_config(tmp_path / "data", keys)
    server = CatalogueProcess(config, tmp_path / "vmic.toml").start()
    try:
        image_file = write_image(tmp_path / "a.raw", 24 * 2**20)
        data = image_file.read_bytes()
        location = await start(http, config.url, upload_request(image_file))
        upload_id = location.rsplit("/", 1)[1]
        part = config.data_dir / "uploads" / f"{upload_id}.part"
        reader, writer = await asyncio.open_connection("127.0.0.1", config.port)
        writer.write((f"PATCH {location} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKENS['alice']}\r\n"
                      f"Upload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\n"
                      f"Content-Length: {len(data)}\r\n\r\n").encode() + data[: 10 * 2**20])
        await writer.drain()
        for _ in range(200):  # wait until bytes are on disk, then kill mid-request
            if part.exists() and part.stat().st_size > 0:
                break
            await asyncio.sleep(0.02)
        server.kill()
        writer.transport.abort()
        # leftovers a crash can leave: a part file whose record never got written
        orphan = config.data_dir / "uploads" / f"{uuid.uuid4()}.part"
        orphan.write_bytes(b"junk")

        server.start()
        assert not orphan.exists(), "a part file without an upload record is swept at start"
        async with CatalogueClient(config.url, TOKENS["alice"]) as client:
            assert (await client.images()) == [], "nothing half-uploaded is published"
            offset = await client.upload_offset(location)
            assert 0 < offset <= 10 * 2**20 and offset == part.stat().st_size
            record = await client.upload(image_file, {}, location=location)
            assert record["sha512"] == hashlib.sha512(data).hexdigest()
            listed = (await client.fetch("/imagelist.json")).body
        assert record["identifier"].encode() in listed
        assert list((config.data_dir / "uploads").iterdir()) == []
    finally:
        server.stop()


def test_unreadable_signing_key_refuses_to_start_with_one_line(keys: KeyPaths, tmp_path: Path) -> None:
    for key, reason in [(tmp_path / "missing.key", "No such file"), (tmp_path, "Is a directory")]:
        config = make_config(tmp_path / "data", keys, endorser_key=key)
        (tmp_path / "vmic.toml").write_text(config_toml(config))
        result = subprocess.run([*VMIC, "serve", "-c", str(tmp_path / "vmic.toml")], capture_output=True,
                                text=True, timeout=30)
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("vmic: error: cannot read signing key") and reason in lines[0]


async def test_only_an_admin_chooses_identifiers_or_reads_subscriptions(catalogue: RunningCatalogue,
                                                                        http: aiohttp.ClientSession,
                                                                        tmp_path: Path) -> None:
    """A publisher taking a partner image's identifier would block its mirroring for good:
    identifiers are the catalogue's to choose unless an admin sets one. Subscriptions (partner
    URLs, their errors) are read with the admin token only."""
    request = upload_request(write_image(tmp_path / "a.raw", 4096), namespace="bob",
                             identifier="2f6b6a52-8d4f-4f57-9c1e-3d1c0b0f8a61")
    async with http.post(f"{catalogue.url}/api/v1/uploads", json=request, headers=auth("bob")) as response:
        assert await error_of(response) == (403, "forbidden")
    assert await no_images(catalogue)
    async with http.get(f"{catalogue.url}/api/v1/subscriptions") as response:
        assert await error_of(response) == (401, "unauthorized")
    async with http.get(f"{catalogue.url}/api/v1/subscriptions", headers=auth("bob")) as response:
        assert await error_of(response) == (403, "forbidden")
    async with http.get(f"{catalogue.url}/api/v1/subscriptions", headers=auth("alice")) as response:
        assert response.status == 200 and await response.json() == []


@pytest.mark.parametrize("body", [b"[" * 100_000 + b"]" * 100_000, b'{"size": NaN}', b'{"size": Infinity}', b"\xff"])
async def test_absurd_json_bodies_are_400(catalogue: RunningCatalogue, http: aiohttp.ClientSession,
                                          body: bytes) -> None:
    """100,000-deep JSON was a 500 (RecursionError); NaN and Infinity are not JSON numbers."""
    headers = {**auth(), "Content-Type": "application/json"}
    async with http.post(f"{catalogue.url}/api/v1/uploads", data=body, headers=headers) as response:
        assert await error_of(response) == (400, "bad_request")
