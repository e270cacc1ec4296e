"""The catalogue as publishers and subscribers use it: real server on loopback."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from support import ENDORSER_DN, TOKENS, VMIC, RunningCatalogue, auth, identities, upload_request, write_image

from vmic.imagelist.model import ImageList
from vmic.imagelist.policy import History, Subscription
from vmic.imagelist.verify import verify_signed_list
from vmic.pki import KeyPaths

SUBSCRIPTION = Subscription(endorser_dn=ENDORSER_DN)


async def publish(catalogue: RunningCatalogue, path: Path, publisher: str = "alice", **request: object) -> dict:
    async with catalogue.client(publisher) as client:
        return await client.upload(path, upload_request(path, **request))  # type: ignore[arg-type]


async def signed_list(catalogue: RunningCatalogue, keys: KeyPaths, history: History | None = None) -> ImageList:
    async with catalogue.client(None) as client:
        message = (await client.fetch("/imagelist")).body
    return await verify_signed_list(message, [keys.ca_dir], SUBSCRIPTION, history)


async def test_published_image_appears_in_the_verified_signed_list(catalogue: RunningCatalogue, keys: KeyPaths,
                                                                   tmp_path: Path) -> None:
    before = await signed_list(catalogue, keys)
    assert before.images == ()
    image_file = write_image(tmp_path / "golden.raw", 3 * 2**20 + 17)
    record = await publish(catalogue, image_file, title="Golden", ram_minimum=2048)

    after = await signed_list(catalogue, keys, History(last_version=before.version))
    assert after.version > before.version
    assert after.identifier == before.identifier  # the list's uuid stays constant
    (image,) = after.images
    assert image.identifier == record["identifier"]
    assert image.sha512 == hashlib.sha512(image_file.read_bytes()).hexdigest()
    assert image.size == image_file.stat().st_size
    assert (image.title, image.os, image.osversion, image.ram_minimum) == ("Golden", "Debian", "12", 2048)
    assert image.uri == f"{catalogue.url}/images/{record['identifier']}"
    assert image.extra["vmic:namespace"] == "alice" and image.extra["vmic:publisher"] == "alice"
    # no description or comments given: neither is empty (hepixvmitrust refuses empty ones)
    assert image.description == "Golden" and image.comments == f"Golden {record['version']}"
    assert after.description


async def test_openssl_gives_back_exactly_the_json_served_for_people(catalogue: RunningCatalogue, keys: KeyPaths,
                                                                     tmp_path: Path, http: aiohttp.ClientSession) -> None:
    await publish(catalogue, write_image(tmp_path / "a.raw", 4096))
    async with http.get(f"{catalogue.url}/imagelist") as response:
        (tmp_path / "list.smime").write_bytes(await response.read())
    async with http.get(f"{catalogue.url}/imagelist.json") as response:
        assert response.content_type == "application/json"
        plain = await response.read()
    result = subprocess.run(["openssl", "smime", "-verify", "-CAfile", str(keys.ca_cert), "-in",
                             str(tmp_path / "list.smime")], capture_output=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout == plain


async def test_etag_and_if_none_match(catalogue: RunningCatalogue, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{catalogue.url}/imagelist") as response:
        etag = response.headers["ETag"]
    async with http.get(f"{catalogue.url}/imagelist", headers={"If-None-Match": etag}) as response:
        assert response.status == 304 and await response.read() == b""
    await publish(catalogue, write_image(tmp_path / "a.raw", 4096))
    async with http.get(f"{catalogue.url}/imagelist", headers={"If-None-Match": etag}) as response:
        assert response.status == 200 and response.headers["ETag"] != etag


async def test_list_is_signed_once_per_change_not_per_request(catalogue: RunningCatalogue, keys: KeyPaths,
                                                              http: aiohttp.ClientSession) -> None:
    versions = set()
    for _ in range(5):
        async with http.get(f"{catalogue.url}/imagelist") as response:
            versions.add(response.headers["ETag"])
    assert len(versions) == 1


async def test_blob_download_with_ranges_as_a_web_seed_needs(catalogue: RunningCatalogue, tmp_path: Path,
                                                           http: aiohttp.ClientSession) -> None:
    data_file = write_image(tmp_path / "a.raw", 2 * 2**20 + 3)
    data = data_file.read_bytes()
    record = await publish(catalogue, data_file)
    url = f"{catalogue.url}/images/{record['identifier']}"
    async with http.get(url) as response:
        assert response.status == 200
        assert int(response.headers["Content-Length"]) == len(data)
        assert response.headers.get("Accept-Ranges") == "bytes" and response.headers.get("ETag")
        assert await response.read() == data
    async with http.get(url, headers={"Range": "bytes=1048570-1048585"}) as response:
        assert response.status == 206
        assert response.headers["Content-Range"] == f"bytes 1048570-1048585/{len(data)}"
        assert int(response.headers["Content-Length"]) == 16
        assert await response.read() == data[1048570:1048586]
    async with http.get(url, headers={"Range": f"bytes={len(data) - 5}-"}) as response:
        assert response.status == 206 and await response.read() == data[-5:]
    async with http.head(url) as response:
        assert response.status == 200 and int(response.headers["Content-Length"]) == len(data)
    async with http.get(url, headers={"Range": f"bytes={len(data) + 10}-"}) as response:
        assert response.status == 416


async def vmic_cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(*VMIC, *args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


async def test_revoke_drops_the_image_and_restore_brings_it_back_within_the_grace(
        catalogue: RunningCatalogue, keys: KeyPaths, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    from vmic.errors import RemoteError

    only = await publish(catalogue, write_image(tmp_path / "only.raw", 8192, seed=8), name="three")
    kept = await publish(catalogue, write_image(tmp_path / "kept.raw", 8192, seed=9), name="four")
    before = await signed_list(catalogue, keys)
    async with catalogue.client("alice") as client:
        await client.revoke(only["identifier"])
    revoked = await signed_list(catalogue, keys, History(last_version=before.version))
    assert [i.identifier for i in revoked.images] == [kept["identifier"]]
    assert catalogue.catalogue.blobs.has(only["sha512"]), "kept for revoke_grace (7 days by default)"
    async with http.get(f"{catalogue.url}/images/{only['identifier']}") as response:
        assert response.status == 410 and (await response.json())["error"] == "gone"  # not served while revoked
    async with catalogue.client("bob") as client:
        with pytest.raises(RemoteError) as caught:
            await client.restore(only["identifier"])
    assert caught.value.status == 403
    rc, out, err = await vmic_cli("restore", only["identifier"], "--url", catalogue.url, "--token", TOKENS["alice"])
    assert rc == 0 and only["identifier"] in out, err
    restored = await signed_list(catalogue, keys, History(last_version=revoked.version))
    assert sorted(i.identifier for i in restored.images) == sorted([only["identifier"], kept["identifier"]])
    async with http.get(f"{catalogue.url}/images/{only['identifier']}") as response:
        assert response.status == 200 and await response.read() == (tmp_path / "only.raw").read_bytes()
    async with catalogue.client("alice") as client:
        with pytest.raises(RemoteError, match="is not revoked") as caught:
            await client.restore(kept["identifier"])
    assert caught.value.status == 409


async def test_after_the_grace_the_bytes_go_unless_still_referenced(catalogue_factory: Any, keys: KeyPaths,
                                                                    tmp_path: Path) -> None:
    from vmic.errors import RemoteError

    catalogue = await catalogue_factory(revoke_grace=1.0)
    shared = write_image(tmp_path / "shared.raw", 8192, seed=7)
    first = await publish(catalogue, shared, name="one")
    second = await publish(catalogue, shared, name="two")  # same bytes, another image
    only = await publish(catalogue, write_image(tmp_path / "only.raw", 8192, seed=8), name="three")
    blobs = catalogue.catalogue.blobs
    async with catalogue.client("alice") as client:
        await client.revoke(first["identifier"])
        await client.revoke(only["identifier"])
    revoked_at = time.monotonic()
    assert blobs.has(only["sha512"])
    await asyncio.sleep(max(0.0, revoked_at + 1.1 - time.monotonic()))  # past the one-second grace
    assert await catalogue.catalogue.collect_garbage() == [only["sha512"]]
    assert blobs.has(second["sha512"]), "a blob still referenced by 'two' must stay"
    async with catalogue.client("alice") as client:
        with pytest.raises(RemoteError, match="its bytes are gone") as caught:
            await client.restore(only["identifier"])
        records = {r["identifier"]: r for r in await client.images()}
    assert caught.value.status == 410
    assert records[first["identifier"]]["revoked"] is not None  # kept as a tombstone


async def test_an_identifier_is_never_reused_even_after_revocation(catalogue: RunningCatalogue, tmp_path: Path) -> None:
    from vmic.errors import RemoteError

    identifier = "2f6b6a52-8d4f-4f57-9c1e-3d1c0b0f8a61"
    await publish(catalogue, write_image(tmp_path / "a.raw", 4096, seed=1), identifier=identifier)
    async with catalogue.client("alice") as client:
        await client.revoke(identifier)
        with pytest.raises(RemoteError, match="never reused") as caught:
            await client.upload(tmp_path / "a.raw", upload_request(tmp_path / "a.raw", version="2",
                                                                   identifier=identifier))
    assert caught.value.status == 409


async def test_image_expiry_and_list_renewal(catalogue_factory, keys: KeyPaths, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    catalogue = await catalogue_factory(list_lifetime=2.0)  # a 2-second list
    expires = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=1)).isoformat()
    await publish(catalogue, write_image(tmp_path / "a.raw", 4096), expires=expires)
    first = await signed_list(catalogue, keys)
    assert len(first.images) == 1 and first.images[0].extra["dc:date:expires"]
    assert first.expires - first.created == dt.timedelta(seconds=2)
    await asyncio.sleep(1.5)
    renewed = await catalogue.catalogue.listing.refresh()  # what the background task does
    assert renewed.image_list.version > first.version
    assert renewed.image_list.expires > first.expires
    assert renewed.image_list.images == (), "an expired image leaves the list"


async def test_restart_keeps_list_identity_and_versions_grow(catalogue_factory, keys: KeyPaths, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from support import start_catalogue

    catalogue = await catalogue_factory()
    await publish(catalogue, write_image(tmp_path / "a.raw", 4096))
    first = await signed_list(catalogue, keys)
    await catalogue.stop()
    restarted = await start_catalogue(catalogue.config)
    try:
        second = await signed_list(restarted, keys, History(last_version=first.version))
        assert second.identifier == first.identifier and second.version > first.version
        assert identities(second.images) == identities(first.images)
    finally:
        await restarted.stop()
        catalogue.stop = restarted.stop  # type: ignore[method-assign]  # already stopped


async def test_html_page_lists_images(catalogue: RunningCatalogue, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    await publish(catalogue, write_image(tmp_path / "a.raw", 3 * 2**20), title="SLC6 <batch>", version="6.1")
    async with http.get(f"{catalogue.url}/") as response:
        assert response.content_type == "text/html"
        page = await response.text()
    assert "SLC6 &lt;batch&gt;" in page and "6.1" in page and "3.0 MiB" in page


async def test_metrics_are_prometheus_text(catalogue: RunningCatalogue, tmp_path: Path,
                                           http: aiohttp.ClientSession) -> None:
    await publish(catalogue, write_image(tmp_path / "a.raw", 4096))
    async with http.get(f"{catalogue.url}/metrics") as response:
        text = await response.text()
    assert 'vmic_catalogue_uploads_total{result="published"} 1.0' in text
    assert "vmic_catalogue_upload_bytes_total 4096.0" in text
    assert "vmic_catalogue_images 1.0" in text
    assert "vmic_catalogue_blob_store_bytes 4096.0" in text


async def test_publisher_cannot_touch_another_namespace(catalogue: RunningCatalogue, tmp_path: Path,
                                                        http: aiohttp.ClientSession) -> None:
    image_file = write_image(tmp_path / "a.raw", 4096)
    async with http.post(f"{catalogue.url}/api/v1/uploads", json=upload_request(image_file, namespace="alice"),
                         headers=auth("bob")) as response:
        assert response.status == 403
        assert (await response.json())["error"] == "forbidden"
    record = await publish(catalogue, image_file)
    async with http.delete(f"{catalogue.url}/api/v1/images/{record['identifier']}", headers=auth("bob")) as response:
        assert response.status == 403
    # alice may publish in every namespace she owns
    assert (await publish(catalogue, image_file, namespace="shared"))["namespace"] == "shared"


async def test_event_stream_announces_every_new_list(catalogue: RunningCatalogue, tmp_path: Path,
                                                     http: aiohttp.ClientSession) -> None:
    async with http.get(f"{catalogue.url}/events") as response:
        assert response.content_type == "text/event-stream"

        async def next_event() -> dict:
            async for line in response.content:
                if line.startswith(b"data:"):
                    return json.loads(line[5:])
            raise AssertionError("stream ended")

        first = await asyncio.wait_for(next_event(), 5)
        assert first["version"] == catalogue.catalogue.listing.current.image_list.version
        await publish(catalogue, write_image(tmp_path / "a.raw", 4096))
        second = await asyncio.wait_for(next_event(), 5)
    assert second["version"] > first["version"]
    assert second["etag"] == catalogue.catalogue.listing.current.etag
