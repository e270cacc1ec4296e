"""Every follower of a catalogue served over HTTPS with a site CA (not one of the system's)
trusts it through ``tls_ca``, the same setting in each: tracker, seeder, node daemon,
partner sync (the catalogue's own ``tls_ca``) and the CLI (``--tls-ca``). Without it, a
follower refuses the connection and says why; the list's own trust (``ca``) is separate."""

from __future__ import annotations

import asyncio
import logging
import subprocess
from pathlib import Path
from typing import Any

import pytest
from support import (
    ENDORSER_DN,
    VMIC,
    node_config,
    publish_and_wait,
    reserved_port,
    running_node,
    running_seeder,
    sha512,
    start_tracker,
    wait_staged,
    write_image,
)

from vmic.catalogue_source import CatalogueSource
from vmic.follow import ListFollower, follower_session
from vmic.pki import KeyPaths, issue_tls_certificate, load_ca, write_pair


@pytest.fixture(scope="module")
def server_tls(tmp_path_factory: pytest.TempPathFactory, other_keys: KeyPaths) -> tuple[Path, Path]:
    """The catalogue's HTTPS certificate, from a CA that is not the list endorser's (other_keys'
    CA plays the site's TLS CA)."""
    base = tmp_path_factory.mktemp("https")
    cert, key = issue_tls_certificate("/CN=catalogue", *load_ca(other_keys), server_names=("127.0.0.1", "localhost"))
    write_pair(cert, key, base / "server.pem", base / "server.key")
    return base / "server.pem", base / "server.key"


async def test_tracker_seeder_and_node_follow_an_https_catalogue_with_tls_ca(
        catalogue_factory: Any, keys: KeyPaths, other_keys: KeyPaths, server_tls: tuple[Path, Path],
        tmp_path: Path) -> None:
    tracker_port = reserved_port()
    catalogue = await catalogue_factory(tls_cert=server_tls[0], tls_key=server_tls[1],
                                        trackers=f"http://127.0.0.1:{tracker_port}/announce")
    catalogue.tls_ca = other_keys.ca_cert
    assert catalogue.url.startswith("https://")

    # without tls_ca: the system's CAs only; the follower says why it cannot read the list
    untrusting = ListFollower(CatalogueSource(catalogue.url, keys.ca_dir, ENDORSER_DN), logging.getLogger("t"))
    async with follower_session([None]) as session:
        assert await untrusting.fetch(session) is None
    assert untrusting.unreachable is not None and "certificate verify failed" in untrusting.unreachable

    tls_ca = other_keys.ca_cert
    tracker, runner = await start_tracker(catalogue.url, keys, "127.0.0.1", tracker_port, tls_ca=tls_ca)
    try:
        source = CatalogueSource(catalogue.url, keys.ca_dir, ENDORSER_DN, tls_ca=tls_ca)
        # the node takes no byte from the catalogue's web seed: it must find the seeder via the tracker
        config = node_config(tmp_path / "node", catalogue.url, keys, catalogues=(source,), web_seed=False)
        async with running_seeder(catalogue, keys, tmp_path / "seeder", tls_ca=tls_ca) as seeder, \
                running_node(config) as node:
            image = write_image(tmp_path / "golden.raw", 3 * 2**20 + 512)
            record, torrent = await publish_and_wait(catalogue, image, tracker)
            held = await wait_staged(node, record["sha512"])
            assert sha512(Path(held.location)) == record["sha512"]
            assert tracker.follower.current is not None and seeder.list_version is not None
            assert node.lists.to_json()[0]["version"] == catalogue.catalogue.listing.current.image_list.version
    finally:
        await runner.cleanup()


async def test_the_node_fetches_over_the_https_web_seed_alone(
        catalogue_factory: Any, keys: KeyPaths, other_keys: KeyPaths, server_tls: tuple[Path, Path],
        tmp_path: Path) -> None:
    """No tracker, no seeder: the bytes come from the catalogue's HTTPS web seed (BEP 19) in
    libtorrent; integrity rests on the signed torrent's piece hashes and the signed sha512."""
    catalogue = await catalogue_factory(tls_cert=server_tls[0], tls_key=server_tls[1])
    catalogue.tls_ca = other_keys.ca_cert
    source = CatalogueSource(catalogue.url, keys.ca_dir, ENDORSER_DN, tls_ca=other_keys.ca_cert)
    config = node_config(tmp_path / "node", catalogue.url, keys, catalogues=(source,), torrent_wait=60.0)
    async with running_node(config) as node:
        image = write_image(tmp_path / "golden.raw", 2 * 2**20 + 99)
        record, torrent = await publish_and_wait(catalogue, image)
        held = await wait_staged(node, record["sha512"])
        assert sha512(Path(held.location)) == record["sha512"]
        assert torrent.btih in node.swarm.transfers, "fetched over BitTorrent (the web seed), not plain HTTP"


async def test_partner_sync_and_the_cli_use_tls_ca(catalogue_factory: Any, keys: KeyPaths, other_keys: KeyPaths,
                                                   server_tls: tuple[Path, Path], tmp_path: Path) -> None:
    site_a = await catalogue_factory(tls_cert=server_tls[0], tls_key=server_tls[1])
    site_a.tls_ca = other_keys.ca_cert
    image = write_image(tmp_path / "a.raw", 2**20)
    async with site_a.client() as client:
        await client.upload(image, {"name": "golden", "version": "1", "namespace": "alice", "os": "Debian",
                                    "size": image.stat().st_size, "sha512": sha512(image)})
    request = {"url": f"{site_a.url}/imagelist", "ca_pem": keys.ca_cert.read_text(), "endorser_dn": ENDORSER_DN,
               "name": "a", "namespace": "partner", "grace_seconds": 0, "interval_seconds": 3600}

    site_b = await catalogue_factory()  # no tls_ca: A's certificate is not trusted
    async with site_b.client() as client:
        refused = await client.subscribe(request)
    assert not refused["sync"]["ok"] and "certificate verify failed" in str(refused["sync"]), refused

    site_c = await catalogue_factory(tls_ca=other_keys.ca_cert)
    async with site_c.client() as client:
        added = await client.subscribe(request)
    assert added["sync"]["ok"], added

    listing = [*VMIC, "list", "--url", site_a.url, "--json"]
    untrusted = await asyncio.to_thread(subprocess.run, listing, capture_output=True, text=True)
    assert untrusted.returncode == 1 and "certificate" in untrusted.stderr and untrusted.stderr.count("\n") == 1
    trusted = await asyncio.to_thread(subprocess.run, [*listing, "--tls-ca", str(other_keys.ca_cert)],
                                      capture_output=True, text=True)
    assert trusted.returncode == 0 and '"golden"' in trusted.stdout, trusted.stderr


async def test_vmic_keys_tls_issues_a_certificate_a_catalogue_serves(catalogue_factory: Any, tmp_path: Path) -> None:
    """The README's HTTPS walk-through: ``vmic keys tls`` issues the server certificate from
    the demo CA; followers name that CA as ``tls_ca``."""
    from vmic.pki import init_keys

    site_keys = init_keys(tmp_path / "keys")
    made = await asyncio.to_thread(subprocess.run, [*VMIC, "keys", "tls", str(tmp_path / "keys"), "--name", "127.0.0.1"],
                                   capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    cert, key = tmp_path / "keys" / "tls" / "127.0.0.1.pem", tmp_path / "keys" / "tls" / "127.0.0.1.key"
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    catalogue = await catalogue_factory(tls_cert=cert, tls_key=key)
    listing = await asyncio.to_thread(subprocess.run, [*VMIC, "list", "--url", catalogue.url, "--tls-ca",
                                                       str(site_keys.ca_cert)], capture_output=True, text=True)
    assert listing.returncode == 0, listing.stderr
    missing = await asyncio.to_thread(subprocess.run, [*VMIC, "keys", "tls", str(tmp_path), "--name", "x"],
                                      capture_output=True, text=True)
    assert missing.returncode == 2 and "holds no CA key" in missing.stderr
