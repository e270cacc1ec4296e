"""Partner-site sync: catalogues (each with its own CA) subscribing to each other."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import json
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from partner_sim import PartnerSimulator
from support import ENDORSER_DN, TOKENS, VMIC, RunningCatalogue, identities, upload_request, write_image

from vmic.errors import RemoteError
from vmic.imagelist.model import ImageList
from vmic.imagelist.policy import Subscription
from vmic.imagelist.smime import Signer
from vmic.imagelist.verify import verify_signed_list
from vmic.pki import KeyPaths, init_keys

PARTNER_DN = "/C=US/O=Partner site/CN=partner endorser"
THIRD_DN = "/C=DE/O=Third site/CN=third endorser"


@pytest.fixture(scope="session")
def partner_keys(tmp_path_factory: pytest.TempPathFactory) -> KeyPaths:
    return init_keys(tmp_path_factory.mktemp("partner-keys"), endorser_dn=PARTNER_DN,
                     ca_dn="/C=US/O=Partner site/CN=Partner CA")


@pytest.fixture(scope="session")
def third_keys(tmp_path_factory: pytest.TempPathFactory) -> KeyPaths:
    return init_keys(tmp_path_factory.mktemp("third-keys"), endorser_dn=THIRD_DN, ca_dn="/C=DE/O=Third/CN=Third CA")


@pytest.fixture
async def sim(partner_keys: KeyPaths) -> AsyncIterator[PartnerSimulator]:
    simulator = await PartnerSimulator.start(partner_keys)
    yield simulator
    await simulator.stop()


def subscription(url: str, keys: KeyPaths, dn: str = PARTNER_DN, **extra: Any) -> dict[str, Any]:
    return {"url": url, "ca_pem": keys.ca_cert.read_text(), "endorser_dn": dn, "name": "partner",
            "namespace": "partner", "grace_seconds": 0, "interval_seconds": 3600, **extra}


async def own_list(catalogue: RunningCatalogue, keys: KeyPaths, dn: str = ENDORSER_DN) -> ImageList:
    async with catalogue.client(None) as client:
        message = (await client.fetch("/imagelist")).body
    return await verify_signed_list(message, [keys.ca_dir], Subscription(endorser_dn=dn))


async def settled(catalogue: RunningCatalogue) -> None:
    """Wait until every image of the catalogue's list has its torrent (no more re-signing due)."""
    for _ in range(200):
        if all("vmic:btih" in i.extra for i in catalogue.catalogue.listing.current.image_list.images):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("torrents were not made")


async def status(catalogue: RunningCatalogue) -> dict[str, Any]:
    async with catalogue.client() as client:  # the admin token: subscriptions are the site's business
        (only,) = await client.subscriptions()
    return only


# --- the whole path between real catalogues --------------------------------------------------


async def test_subscribe_mirror_republish_across_three_sites(catalogue_factory, keys: KeyPaths,  # type: ignore[no-untyped-def]
                                                             partner_keys: KeyPaths, third_keys: KeyPaths,
                                                             tmp_path: Path) -> None:
    site_a = await catalogue_factory(endorser_cert=partner_keys.cert, endorser_key=partner_keys.key)
    site_b = await catalogue_factory()  # signs with `keys`
    site_c = await catalogue_factory(endorser_cert=third_keys.cert, endorser_key=third_keys.key)
    debian = write_image(tmp_path / "debian.raw", 3 * 2**20, seed=1)
    slc = write_image(tmp_path / "slc.raw", 2**20, seed=2)
    async with site_a.client() as client:
        wanted = await client.upload(debian, upload_request(debian, name="debian", os="Debian"))
        await client.upload(slc, upload_request(slc, name="slc", os="SLC"))

    async with site_b.client() as client:
        added = await client.subscribe(subscription(f"{site_a.url}/imagelist", partner_keys, select={"os": "Debian"}))
    assert added["sync"]["ok"] and added["sync"]["imported"] == [wanted["identifier"]]
    imported_from = added["sync"]["list_version"]
    await settled(site_a)  # A re-signs once its torrents are made; B follows
    async with site_b.client() as client:
        await client.sync("partner")

    a_list = await own_list(site_a, partner_keys, PARTNER_DN)
    b_list = await own_list(site_b, keys)
    (image,) = b_list.images  # only the selected image
    assert image.identifier == wanted["identifier"] and image.sha512 == wanted["sha512"]
    assert image.uri == f"{site_b.url}/images/{image.identifier}"
    assert image.extra["vmic:namespace"] == "partner"
    assert image.extra["vmic:source:endorser_dn"] == PARTNER_DN
    assert image.extra["vmic:source:list_identifier"] == a_list.identifier
    assert image.extra["vmic:source:list_version"] == imported_from <= a_list.version
    async with site_b.client(None) as client:
        blob = (await client.fetch(image.uri)).body
        verbatim = (await client.fetch("/partners/partner/imagelist")).body
    assert hashlib.sha512(blob).hexdigest() == wanted["sha512"]
    async with site_a.client(None) as client:
        assert verbatim == (await client.fetch("/imagelist")).body, "B serves A's signed list byte for byte"
    original = await verify_signed_list(verbatim, [partner_keys.ca_dir], Subscription(endorser_dn=PARTNER_DN))
    assert original.identifier == a_list.identifier  # downstream checks A's own signature end to end

    # a third site subscribes to B: B's list, signed by B, carries the mirrored image on
    async with site_c.client() as client:
        chained = await client.subscribe(subscription(f"{site_b.url}/imagelist", keys, dn=ENDORSER_DN, name="b",
                                                      namespace="site-b"))
    assert chained["sync"]["imported"] == [wanted["identifier"]]
    (c_image,) = (await own_list(site_c, third_keys, THIRD_DN)).images
    assert c_image.sha512 == wanted["sha512"] and c_image.extra["vmic:source:endorser_dn"] == ENDORSER_DN


async def test_revocation_propagates_after_the_grace_period(catalogue_factory, keys: KeyPaths,  # type: ignore[no-untyped-def]
                                                            partner_keys: KeyPaths, tmp_path: Path) -> None:
    site_a = await catalogue_factory(endorser_cert=partner_keys.cert, endorser_key=partner_keys.key)
    site_b = await catalogue_factory()
    image_file = write_image(tmp_path / "a.raw", 2**20)
    async with site_a.client() as client:
        record = await client.upload(image_file, upload_request(image_file))
    async with site_b.client() as client:
        await client.subscribe(subscription(f"{site_a.url}/imagelist", partner_keys, grace_seconds=1))
    async with site_a.client() as client:
        await client.revoke(record["identifier"])
    async with site_b.client() as client:
        first = await client.sync("partner")
        assert first["revoked"] == [] and len((await own_list(site_b, keys)).images) == 1, "kept during the grace"
        await asyncio.sleep(1.1)
        second = await client.sync("partner")
    assert second["revoked"] == [record["identifier"]]
    assert (await own_list(site_b, keys)).images == ()
    assert site_b.catalogue.blobs.has(record["sha512"]), "B keeps the bytes for its own revoke_grace"


async def test_new_images_arrive_through_the_partners_event_stream(catalogue_factory, keys: KeyPaths,  # type: ignore[no-untyped-def]
                                                                   partner_keys: KeyPaths, tmp_path: Path) -> None:
    site_a = await catalogue_factory(endorser_cert=partner_keys.cert, endorser_key=partner_keys.key)
    site_b = await catalogue_factory()
    async with site_b.client() as client:  # polls only once an hour: only the event stream can be this fast
        await client.subscribe(subscription(f"{site_a.url}/imagelist", partner_keys, interval_seconds=3600))
    await asyncio.sleep(1.5)  # the follower connects
    image_file = write_image(tmp_path / "a.raw", 2**20)
    async with site_a.client() as client:
        record = await client.upload(image_file, upload_request(image_file))
    for _ in range(100):
        if (await own_list(site_b, keys)).image(record["identifier"]) is not None:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the partner's new image did not arrive through its event stream")


# --- failures: the last good list stays in force ---------------------------------------------


async def test_each_bad_list_is_refused_and_the_last_good_one_kept(catalogue: RunningCatalogue, keys: KeyPaths,
                                                                   partner_keys: KeyPaths, other_keys: KeyPaths,
                                                                   sim: PartnerSimulator) -> None:
    identifier = sim.add_image(b"x" * 70000, title="good image", os="Debian")
    sim.publish()
    sim.publish()  # version 2 is the last good one
    good_version = sim.version
    async with catalogue.client() as client:
        assert (await client.subscribe(subscription(f"{sim.url}/imagelist", partner_keys)))["sync"]["ok"]
    before = await own_list(catalogue, keys)
    assert [i.identifier for i in before.images] == [identifier]

    evil = Signer.load(other_keys.cert, other_keys.key)  # same endorser DN, from a CA nobody here trusts
    genuine = sim.served
    good_image = sim.build().images[0]
    past = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(days=2)
    attacks = {
        "tampered": (genuine.replace(b"good image", b"evil image"), "signature_invalid"),
        "unsigned": (sim.build(version=good_version + 1).to_bytes(), "signature_invalid"),
        "untrusted CA": (evil.sign(sim.build(version=good_version + 1).to_bytes()), "untrusted_signer"),
        "expired": (sim.sign(sim.build(version=good_version + 1, created=past, expires=past + dt.timedelta(days=1))),
                    "expired"),
        "rolled back": (sim.history[0], "rollback"),
        "other list": (sim.sign(sim.build(version=good_version + 1, identifier="00000000-0000-0000-0000-000000000001")),
                       "identifier_mismatch"),
        "identifier reused": (sim.sign(sim.build(version=good_version + 1).replace(
            images=(dataclasses.replace(good_image, sha512="f" * 128),))), "image_identifier_reused"),
        "endless": (None, "list_too_large"),  # streamed without end: read up to the cap only
    }
    for attack, (served, code) in attacks.items():
        sim.endless = served is None
        sim.served = served or genuine
        async with catalogue.client() as client:
            result = await client.sync("partner")
        assert not result["ok"] and f"({code})" in result["errors"][0], (attack, result)
        state = await status(catalogue)
        assert state["state"] == "failing" and f"({code})" in state["last_error"], attack
        assert state["last_version"] == good_version, f"{attack}: the last good version stays"
        after = await own_list(catalogue, keys)
        assert identities(after.images) == identities(before.images), f"{attack}: the mirrored image stays"
    async with catalogue.client(None) as client:
        assert (await client.fetch("/partners/partner/imagelist")).body == genuine
        metrics = (await client.fetch("/metrics")).body.decode()
    assert 'vmic_catalogue_partner_syncs_total{result="rollback",subscription="partner"} 1.0' in metrics


async def test_wrong_endorser_dn_is_refused(catalogue: RunningCatalogue, partner_keys: KeyPaths,
                                            sim: PartnerSimulator) -> None:
    sim.add_image(b"x" * 1000)
    sim.publish()
    async with catalogue.client() as client:
        added = await client.subscribe(subscription(f"{sim.url}/imagelist", partner_keys, dn="/C=US/O=Other/CN=x"))
    assert not added["sync"]["ok"] and "(endorser_mismatch)" in added["sync"]["errors"][0]
    assert catalogue.catalogue.listing.current.image_list.images == ()


async def test_partner_down_mid_transfer_resumes_with_range(catalogue: RunningCatalogue, keys: KeyPaths,
                                                            partner_keys: KeyPaths, sim: PartnerSimulator) -> None:
    data = bytes(range(256)) * 20000  # 5 MB
    identifier = sim.add_image(data)
    sim.publish()
    sim.cut_after = 2 * 2**20
    async with catalogue.client() as client:
        first = await client.subscribe(subscription(f"{sim.url}/imagelist", partner_keys))
        assert not first["sync"]["ok"] and "resumes at the next attempt" in first["sync"]["errors"][0]
        assert catalogue.catalogue.listing.current.image_list.images == (), "nothing partial is published"
        second = await client.sync("partner")
    assert second["imported"] == [identifier]
    assert sim.ranges[0] is None and sim.ranges[1] is not None
    resumed_at = int(sim.ranges[1].removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_at <= 2 * 2**20, "only the rest was fetched"
    (image,) = (await own_list(catalogue, keys)).images
    assert image.sha512 == hashlib.sha512(data).hexdigest()
    assert catalogue.catalogue.blobs.part_ids() == set()


@pytest.mark.parametrize("served", ["wrong", "endless"])
async def test_bytes_that_do_not_match_the_list_are_not_imported(catalogue: RunningCatalogue, partner_keys: KeyPaths,
                                                                 sim: PartnerSimulator, served: str) -> None:
    data = b"genuine bytes " * 1000
    identifier = sim.add_image(data)
    sim.publish()
    sim.wrong_bytes[identifier] = b"x" * len(data) if served == "wrong" else data + b"and more " * 10000
    async with catalogue.client() as client:
        result = (await client.subscribe(subscription(f"{sim.url}/imagelist", partner_keys)))["sync"]
    reason = "do not match the sha512" if served == "wrong" else "more than hv:size"
    assert not result["ok"] and reason in result["errors"][0]
    assert catalogue.catalogue.listing.current.image_list.images == ()
    assert catalogue.catalogue.blobs.sha512s() == set() and catalogue.catalogue.blobs.part_ids() == set()
    assert reason in (await status(catalogue))["last_error"]


async def test_a_hand_written_openssl_signed_list_imports(catalogue: RunningCatalogue, keys: KeyPaths,
                                                          partner_keys: KeyPaths, sim: PartnerSimulator,
                                                          tmp_path: Path) -> None:
    """Interop: vmcatcher/AppDB field layout, numbers as strings, signed by `openssl smime -sign`."""
    data = b"appdb image " * 5000
    identifier = sim.add_image(data)
    now = dt.datetime.now(dt.timezone.utc)
    document = {"hv:imagelist": {
        "dc:identifier": sim.list_identifier, "dc:title": "AppDB-like list", "dc:description": "by hand",
        "dc:date:created": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "dc:date:expires": (now + dt.timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "hv:version": "3", "hv:uri": f"{sim.url}/imagelist", "dc:source": sim.url, "ad:vo": "atlas",
        "hv:endorser": {"hv:x509": {"hv:dn": PARTNER_DN, "hv:ca": "/C=US/O=Partner site/CN=Partner CA",
                                    "hv:email": "ops@partner.example", "dc:creator": "Partner"}},
        "hv:images": [{"hv:image": {
            "dc:identifier": identifier, "dc:title": "CentOS 7 worker node", "dc:description": "WN",
            "hv:uri": f"{sim.url}/images/{identifier}", "hv:size": str(len(data)),
            "sl:checksum:sha512": hashlib.sha512(data).hexdigest(), "hv:version": "7.9-1",
            "hv:hypervisor": "KVM", "hv:format": "raw", "sl:os": "Linux", "sl:osversion": "CentOS 7",
            "sl:arch": "x86_64", "hv:ram_minimum": "2048", "hv:core_minimum": "2", "ad:mpuri": "https://m/1"}}],
    }}
    (tmp_path / "list.json").write_text(json.dumps(document, indent=4))
    subprocess.run(["openssl", "smime", "-sign", "-text", "-signer", str(partner_keys.cert), "-inkey",
                    str(partner_keys.key), "-in", str(tmp_path / "list.json"), "-out", str(tmp_path / "list.smime")],
                   check=True)
    sim.served = (tmp_path / "list.smime").read_bytes()
    async with catalogue.client() as client:
        result = (await client.subscribe(subscription(f"{sim.url}/imagelist", partner_keys)))["sync"]
    assert result["ok"] and result["imported"] == [identifier], result
    (image,) = (await own_list(catalogue, keys)).images
    assert (image.title, image.version, image.ram_minimum, image.core_minimum) == ("CentOS 7 worker node", "7.9-1",
                                                                                   2048, 2)
    assert image.extra["ad:mpuri"] == "https://m/1", "the partner's extension fields travel on"


# --- managing subscriptions ------------------------------------------------------------------


async def test_only_admins_manage_subscriptions_and_namespaces_do_not_clash(catalogue: RunningCatalogue,
                                                                          partner_keys: KeyPaths,
                                                                          sim: PartnerSimulator) -> None:
    sim.publish()
    async with catalogue.client("bob") as client:
        with pytest.raises(RemoteError) as caught:
            await client.subscribe(subscription(f"{sim.url}/imagelist", partner_keys))
    assert caught.value.status == 403
    async with catalogue.client("alice") as client:
        with pytest.raises(RemoteError) as caught:
            await client.subscribe(subscription(f"{sim.url}/imagelist", partner_keys, namespace="bob"))
        assert caught.value.status == 409 and "local publisher" in str(caught.value)
        with pytest.raises(RemoteError) as caught:
            await client.subscribe(subscription(f"{sim.url}/imagelist", partner_keys, namespace="../x"))
        assert caught.value.status == 400


async def test_subscribe_cli(catalogue: RunningCatalogue, keys: KeyPaths, partner_keys: KeyPaths,
                             sim: PartnerSimulator) -> None:
    identifier = sim.add_image(b"cli " * 4096, os="Debian")
    sim.publish()

    async def vmic(*args: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(*VMIC, *args, "--url", catalogue.url,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                                                    env={**os.environ, "VMIC_TOKEN": TOKENS["alice"]})
        out, err = await proc.communicate()
        return proc.returncode or 0, out.decode(), err.decode()

    rc, out, err = await vmic("subscribe", "add", f"{sim.url}/imagelist", "--ca", str(partner_keys.ca_dir),
                              "--endorser-dn", PARTNER_DN, "--name", "site-a", "--select", "os=Debian")
    assert rc == 0, err
    assert "subscribed site-a -> namespace site-a" in out and "1 imported" in out
    assert (await own_list(catalogue, keys)).image(identifier) is not None
    rc, out, _ = await vmic("subscribe", "list")
    assert rc == 0 and "site-a" in out and " ok " in out
    sim.served = sim.history[-1].replace(b"Debian", b"Fedora")
    rc, _, err = await vmic("subscribe", "sync")
    assert rc == 1 and err.count("\n") == 1 and "signature_invalid" in err
    rc, out, _ = await vmic("subscribe", "list")
    assert "failing" in out and "signature" in out
    rc, out, _ = await vmic("subscribe", "remove", "site-a")
    assert rc == 0 and "1 mirrored image(s) revoked" in out
    assert (await own_list(catalogue, keys)).images == ()
