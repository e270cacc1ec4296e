"""The node daemon end to end, in this process, against a real catalogue, tracker and
seeder on loopback: publish -> fetched over BitTorrent -> verified -> staged, without
anyone asking; the local API and CLI over the Unix socket; references and eviction;
restart and reconciliation."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from support import (
    NODECACHE,
    logged,
    node_config,
    publish_and_wait,
    running_node,
    running_seeder,
    sha512,
    small_tmpfs,
    upload_request,
    wait_settled,
    wait_staged,
    write_image,
)

from nodecache.storage.files import read_metadata
from vmic.pki import KeyPaths


async def api(socket: Path, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(socket))) as session:
        async with session.request(method, f"http://node{path}", json=body) as response:
            text = await response.text()
            lines = [json.loads(line) for line in text.splitlines() if line.strip()]
            return response.status, lines if path == "/ensure" and response.status == 200 else lines[0]


async def cli(*args: str) -> subprocess.CompletedProcess[str]:
    proc = await asyncio.create_subprocess_exec(*NODECACHE, *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await proc.communicate()
    return subprocess.CompletedProcess(args, proc.returncode or 0, out.decode(), err.decode())


async def test_a_published_image_is_staged_on_the_node_by_itself(site: Any, keys: KeyPaths, tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    catalogue, tracker, _ = site
    config = node_config(tmp_path / "node", catalogue.url, keys)
    async with running_seeder(catalogue, keys, tmp_path / "seeder"), running_node(config) as node:
        image = write_image(tmp_path / "golden.raw", 6 * 2**20 + 512)
        record, torrent = await publish_and_wait(catalogue, image, tracker)
        held = await wait_staged(node, record["sha512"])
        base = Path(held.location)
        assert base == config.cache_dir / "base" / f"{record['sha512']}.raw"
        assert sha512(base) == record["sha512"] and stat.S_IMODE(base.stat().st_mode) == 0o444
        assert read_metadata(base)["identifier"] == record["identifier"]
        # fetched over BitTorrent and seeded on: the torrent stays in the node's session
        assert torrent.btih in node.swarm.transfers
        assert node.swarm.transfers[torrent.btih].handle.status().is_seeding
        # its sha512 was hashed while the pieces arrived: no whole-image pass after the last one
        assert [e["hashed_while_downloading"] for e in logged(caplog, "node.staging")] == [True]

        status = await cli("--socket", str(config.socket_path), "status", "--json")
        assert status.returncode == 0, status.stderr
        body = json.loads(status.stdout)
        assert body["catalogues"][0]["version"] == catalogue.catalogue.listing.current.image_list.version
        assert [(i["identifier"], i["state"]) for i in body["images"]] == [(record["identifier"], "staged")]
        table = await cli("--socket", str(config.socket_path), "status")
        assert "staged" in table.stdout and "lists in force" in table.stdout

        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(config.socket_path))) as s:
            async with s.get("http://node/metrics") as response:
                metrics = await response.text()
        assert 'vmic_node_stages_total{result="staged"} 1.0' in metrics
        assert 'vmic_node_images{state="staged"} 1.0' in metrics


async def test_ensure_stages_on_demand_and_reports_progress(catalogue: Any, keys: KeyPaths, tmp_path: Path) -> None:
    """A node that pre-stages nothing: ``nodecache ensure`` fetches (web seed only: no
    tracker, no seeder) and waits; the NDJSON stream shows progress."""
    from nodecache.config import Selection

    config = node_config(tmp_path / "node", catalogue.url, keys, select=Selection(none=True), format="qcow2")
    async with running_node(config) as node:
        image = write_image(tmp_path / "golden.raw", 3 * 2**20)
        record, _ = await publish_and_wait(catalogue, image)
        await node.refresh()
        assert await node.state.images() == [], "nothing is pre-staged"

        status, lines = await api(config.socket_path, "POST", "/ensure", {"image": "alice/golden"})
        assert status == 200 and "result" in lines[-1], lines
        assert lines[-1]["result"]["format"] == "qcow2" and lines[-1]["result"]["state"] == "staged"
        again = await cli("--socket", str(config.socket_path), "ensure", "alice/golden")
        assert again.returncode == 0 and "staged at" in again.stdout and record["sha512"] in again.stdout

        unknown = await cli("--socket", str(config.socket_path), "ensure", "alice/nothing")
        assert unknown.returncode == 1
        assert unknown.stderr.strip() == "nodecache: error: no followed list names an image 'alice/nothing' " \
                                         "(unknown_image)"
        status, body = await api(config.socket_path, "POST", "/ensure", {"image": ""})
        assert status == 400 and body["error"] == "bad_request"


async def test_a_base_in_use_is_never_evicted(catalogue: Any, keys: KeyPaths, tmp_path: Path) -> None:
    config = node_config(tmp_path / "node", catalogue.url, keys, format="raw")
    async with running_node(config) as node:
        record, _ = await publish_and_wait(catalogue, write_image(tmp_path / "a.raw", 2**20))
        await node.refresh()
        held = await wait_staged(node, record["sha512"])
        overlay = tmp_path / "vm1.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", held.location, "-F", "raw", str(overlay)],
                       check=True)
        status, _ = await api(config.socket_path, "POST", "/refs",
                              {"image": record["identifier"], "holder": "vm1", "disk": str(overlay)})
        assert status == 201

        status, body = await api(config.socket_path, "POST", "/evict", {"image": record["identifier"]})
        assert status == 409 and body["error"] == "in_use" and "vm1" in body["message"]

        async with catalogue.client() as client:  # revoked: still kept while vm1 uses it
            await client.revoke(record["identifier"])
        await node.refresh()
        assert (await node.state.get(record["sha512"])).state == "staged"  # type: ignore[union-attr]
        assert Path(held.location).exists()

        overlay.unlink()  # the VM is gone (its shim crashed before dropping the reference)
        status, body = await api(config.socket_path, "POST", "/gc")
        # This call evicts it, unless the daemon's own plan (after a list event) got there first:
        # both hold the same lock, so either way it is gone by the time the answer comes.
        expected = [{"sha512": record["sha512"], "identifier": record["identifier"], "reason": "revoked"}]
        assert status == 200 and body["evicted"] in (expected, [])
        assert node.metrics.evictions.labels("revoked")._value.get() == 1
        assert await node.state.get(record["sha512"]) is None
        assert not Path(held.location).exists() and await node.state.refs() == []
        assert list((config.cache_dir / "data").iterdir()) == []

        async with catalogue.client() as client:  # restored within the catalogue's revoke_grace: back everywhere
            await client.restore(record["identifier"])
        await node.refresh()
        again = await wait_staged(node, record["sha512"])
        assert sha512(Path(again.location)) == record["sha512"]


async def test_least_recently_used_go_first_above_the_watermark(catalogue: Any, keys: KeyPaths,
                                                                tmp_path: Path) -> None:
    config = node_config(tmp_path / "node", catalogue.url, keys, capacity=3 * 2**20 + 2**19,
                         high_watermark=0.8, low_watermark=0.5)
    async with running_node(config) as node:
        records = []
        for n in range(3):
            record, _ = await publish_and_wait(catalogue, write_image(tmp_path / f"{n}.raw", 2**20, seed=n),
                                               name=f"image{n}")
            await node.refresh()
            await wait_staged(node, record["sha512"])
            records.append(record)
            await asyncio.sleep(0.01)
        # image0 was used most recently: image1, then image2, are the least recently used
        await api(config.socket_path, "POST", "/ensure", {"image": records[0]["identifier"]})
        record, _ = await publish_and_wait(catalogue, write_image(tmp_path / "3.raw", 2**20, seed=3), name="image3")
        await node.refresh()
        await wait_staged(node, record["sha512"])
        await node.gc()
        states = {r.identifier: r.state for r in await node.state.images()}
        assert states == {records[0]["identifier"]: "staged", records[1]["identifier"]: "evicted",
                          records[2]["identifier"]: "evicted", record["identifier"]: "staged"}
        # evicted for space: not fetched again by itself, but ensure brings it back
        await node.plan()
        assert (await node.state.get(records[1]["sha512"])).state == "evicted"  # type: ignore[union-attr]
        status, lines = await api(config.socket_path, "POST", "/ensure", {"image": records[1]["identifier"]})
        assert lines[-1]["result"]["state"] == "staged"


async def test_restart_reconciles_the_database_with_the_disk(catalogue: Any, keys: KeyPaths, tmp_path: Path) -> None:
    config = node_config(tmp_path / "node", catalogue.url, keys)
    first, _ = await publish_and_wait(catalogue, write_image(tmp_path / "a.raw", 2**20, seed=1), name="a")
    second, _ = await publish_and_wait(catalogue, write_image(tmp_path / "b.raw", 2**20, seed=2), name="b")
    async with running_node(config) as node:
        await wait_staged(node, first["sha512"])
        held = await wait_staged(node, second["sha512"])
    # while the daemon is down: a base vanishes, a crash leaves a half-staged file and an orphan download
    os.chmod(held.location, 0o644)
    os.unlink(held.location)
    os.unlink(config.cache_dir / "data" / second["sha512"])
    (config.cache_dir / "base" / (".staging-" + "c" * 128 + ".raw")).write_bytes(b"half")
    (config.cache_dir / "data" / ("d" * 128)).write_bytes(b"orphan")
    async with running_node(config) as node:
        assert sorted(p.name for p in (config.cache_dir / "base").iterdir() if p.name.startswith(".")) == []
        assert not (config.cache_dir / "data" / ("d" * 128)).exists()
        # the vanished image is fetched and staged again; the other one was kept as it was
        again = await wait_staged(node, second["sha512"])
        assert sha512(Path(again.location)) == second["sha512"]
        assert (await node.state.get(first["sha512"])).state == "staged"  # type: ignore[union-attr]


async def test_nodes_seed_what_they_hold_to_each_other(site: Any, keys: KeyPaths, tmp_path: Path) -> None:
    """Node A stages the image (seeder and web seed); then node B, which may not use the
    web seed and has no seeder to ask, gets every byte from A."""
    from nodecache.config import Selection

    catalogue, tracker, _ = site
    a_config = node_config(tmp_path / "a", catalogue.url, keys)
    async with running_seeder(catalogue, keys, tmp_path / "seeder"), running_node(a_config) as a:
        record, torrent = await publish_and_wait(catalogue, write_image(tmp_path / "g.raw", 4 * 2**20), tracker)
        await wait_staged(a, record["sha512"])
    b_config = node_config(tmp_path / "b", catalogue.url, keys, web_seed=False, select=Selection(none=True))
    a_config = node_config(tmp_path / "a", catalogue.url, keys)  # A again, after a restart: seeds what it holds
    async with running_node(a_config) as a, running_node(b_config) as b:
        assert torrent.btih in a.swarm.transfers, "A seeds its staged image from the start"
        await b.refresh()
        held = await b.ensure(record["identifier"])
        assert sha512(Path(held.location)) == record["sha512"]
        assert not b.swarm.transfers[torrent.btih].handle.url_seeds()
        await asyncio.sleep(1.5)  # libtorrent updates its counters once a second
        assert a.swarm.totals()[1] >= 4 * 2**20, "A uploaded the whole image to B"


async def test_disk_full_while_staging_leaves_the_cache_consistent(catalogue: Any, keys: KeyPaths,
                                                                   tmp_path: Path) -> None:
    """The cache on a 24 MiB file system; the second image's conversion does not fit."""
    with small_tmpfs(tmp_path / "small", "24m") as mount:
        config = node_config(mount / "node", catalogue.url, keys, format="qcow2", retry_after=3600.0)
        async with running_node(config) as node:
            first, _ = await publish_and_wait(catalogue, write_image(tmp_path / "a.raw", 6 * 2**20, seed=1), name="a")
            await node.refresh()
            held = await wait_staged(node, first["sha512"])
            second, _ = await publish_and_wait(catalogue, write_image(tmp_path / "b.raw", 8 * 2**20, seed=2),
                                               name="b")
            await node.refresh()
            record = await wait_settled(node, second["sha512"])
            assert record.state == "failed" and "No space left on device" in record.reason, record.reason
            assert sorted(os.listdir(config.cache_dir / "base")) == [Path(held.location).name]
            same = subprocess.run(["qemu-img", "compare", "-f", "qcow2", "-F", "raw", held.location,
                                   str(tmp_path / "a.raw")], capture_output=True)
            assert same.returncode == 0, "the other image is unaffected"
            status = await node.status()
            assert {i["identifier"]: i["state"] for i in status["images"]} == {first["identifier"]: "staged",
                                                                                second["identifier"]: "failed"}


async def test_a_publisher_cannot_hide_anothers_image_by_publishing_its_bytes(catalogue: Any, keys: KeyPaths,
                                                                             tmp_path: Path) -> None:
    """Listings are (catalogue, identifier): bob publishing the exact bytes of alice's image
    (they are public) and revoking his copy leaves alice's name, identifier and base intact;
    the bytes are fetched and held once."""
    config = node_config(tmp_path / "node", catalogue.url, keys)
    async with running_node(config) as node:
        image = write_image(tmp_path / "golden.raw", 2**20)
        alice, _ = await publish_and_wait(catalogue, image)
        async with catalogue.client("bob") as client:
            bob = await client.upload(image, upload_request(image, namespace="bob", name="copy"))
        await node.refresh()
        await wait_staged(node, alice["sha512"])
        for wanted, identifier in (("alice/golden", alice["identifier"]), ("bob/copy", bob["identifier"])):
            status, lines = await api(config.socket_path, "POST", "/ensure", {"image": wanted})
            assert status == 200 and lines[-1]["result"]["identifier"] == identifier, lines
        assert len(await node.state.images()) == 1 and len(list((config.cache_dir / "base").iterdir())) == 1

        async with catalogue.client("bob") as client:
            await client.revoke(bob["identifier"])
        await node.refresh()
        status, lines = await api(config.socket_path, "POST", "/ensure", {"image": "alice/golden"})
        assert status == 200 and lines[-1]["result"]["identifier"] == alice["identifier"]
        assert lines[-1]["result"]["state"] == "staged", "bob's revocation did not evict alice's image"
        status, body = await api(config.socket_path, "GET", "/status")
        assert [(i["identifier"], i["state"]) for i in body["images"]] == [(alice["identifier"], "staged")]
        status, lines = await api(config.socket_path, "POST", "/ensure", {"image": "bob/copy"})
        assert status == 404 and lines["error"] == "unknown_image", lines
