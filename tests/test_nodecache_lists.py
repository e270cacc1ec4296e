"""What a node does with hostile catalogues, one test per attack, against a catalogue
*simulator* (tests/partner_sim.py: a real HTTP server signing real lists, misbehaving
on demand). A refused list keeps the last good one in force, with the precise reason
in the status, the log and a metric; bytes that do not match the signed list are
never staged."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from partner_sim import PartnerSimulator
from support import ENDORSER_DN, logged, node_api, node_config, running_node, until, wait_settled, wait_staged

from vmic.catalogue_source import CatalogueSource
from vmic.imagelist.smime import Signer
from vmic.pki import KeyPaths, init_keys, revoke

IMAGE = bytes(range(256)) * 4096 + b"tail"  # 1 MiB + 4 bytes, raw


@pytest.fixture
async def sim(keys: KeyPaths) -> AsyncIterator[PartnerSimulator]:
    sim = await PartnerSimulator.start(keys)
    yield sim
    await sim.stop()


def config_for(sim: PartnerSimulator, keys: KeyPaths, tmp_path: Path, **overrides: Any) -> Any:
    source = CatalogueSource(sim.url, keys.ca_dir, ENDORSER_DN, sim.list_identifier)
    return node_config(tmp_path / "node", sim.url, keys, catalogues=(source,), retry_after=0.0, **overrides)


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def tampered(sim: PartnerSimulator, keys: KeyPaths, other_keys: KeyPaths) -> None:
    sim.served = sim.publish().replace(b'"hv:version"', b'"hv:versioN"', 1)


def unsigned(sim: PartnerSimulator, keys: KeyPaths, other_keys: KeyPaths) -> None:
    sim.version += 1
    sim.served = sim.build().to_bytes()


def expired(sim: PartnerSimulator, keys: KeyPaths, other_keys: KeyPaths) -> None:
    sim.publish(created=now() - dt.timedelta(days=2), expires=now() - dt.timedelta(hours=1))


def from_the_future(sim: PartnerSimulator, keys: KeyPaths, other_keys: KeyPaths) -> None:
    sim.publish(created=now() + dt.timedelta(days=1))


def rolled_back(sim: PartnerSimulator, keys: KeyPaths, other_keys: KeyPaths) -> None:
    sim.served = sim.history[0]  # an old, validly signed list (the node accepted a newer one)


def wrong_endorser(sim: PartnerSimulator, keys: KeyPaths, other_keys: KeyPaths) -> None:
    sim.signer = Signer.load(other_keys.cert, other_keys.key)  # same DN, CA the node does not trust
    sim.publish()


def other_list(sim: PartnerSimulator, keys: KeyPaths, other_keys: KeyPaths) -> None:
    sim.publish(identifier="00000000-0000-0000-0000-000000000000")


def identifier_reused(sim: PartnerSimulator, keys: KeyPaths, other_keys: KeyPaths) -> None:
    identifier = next(iter(sim.images))
    sim.images[identifier] = IMAGE[::-1]  # same identifier, other bytes
    sim.publish()


def endless(sim: PartnerSimulator, keys: KeyPaths, other_keys: KeyPaths) -> None:
    sim.endless = True  # read up to the cap (16 MiB), never parsed or checked


ATTACKS: list[tuple[Callable[..., None], str]] = [
    (tampered, "signature_invalid"),
    (unsigned, "signature_invalid"),
    (expired, "expired"),
    (from_the_future, "created_in_future"),
    (rolled_back, "rollback"),
    (wrong_endorser, "untrusted_signer"),
    (other_list, "identifier_mismatch"),
    (identifier_reused, "image_identifier_reused"),
    (endless, "list_too_large"),
]


@pytest.mark.parametrize("attack, code", ATTACKS, ids=[a.__name__ for a, _ in ATTACKS])
async def test_a_hostile_list_is_refused_and_the_last_good_one_kept(
        sim: PartnerSimulator, keys: KeyPaths, other_keys: KeyPaths, tmp_path: Path,
        attack: Callable[..., None], code: str) -> None:
    identifier = sim.add_image(IMAGE, title="partner/golden")
    sim.publish()
    sim.publish()  # version 2 accepted: version 1 is then a rollback
    async with running_node(config_for(sim, keys, tmp_path)) as node:
        await node.refresh()
        held = await wait_staged(node, hashlib.sha512(IMAGE).hexdigest())
        attack(sim, keys, other_keys)
        await node.refresh()
        follower = node.lists.followers[sim.url]
        assert follower.refused is not None and follower.refused.code == code, follower.refused
        assert follower.current is not None and follower.current.version == 2, "the last good list stays in force"
        status = await node.status()
        assert status["catalogues"][0]["refused_code"] == code and status["catalogues"][0]["version"] == 2
        assert [(i["identifier"], i["state"]) for i in status["images"]] == [(identifier, "staged")]
        assert Path(held.location).read_bytes() == IMAGE
        assert node.metrics.verification_failures.labels("list", code)._value.get() == 1

        sim.signer = Signer.load(keys.cert, keys.key)  # the catalogue recovers: accepted again
        sim.images[identifier] = IMAGE
        sim.endless = False
        sim.publish()
        await node.refresh()
        assert follower.refused is None and follower.current.version == sim.version


async def test_the_last_good_list_survives_a_restart(sim: PartnerSimulator, keys: KeyPaths, tmp_path: Path) -> None:
    sim.add_image(IMAGE)
    sim.publish()
    sim.publish()
    config = config_for(sim, keys, tmp_path)
    async with running_node(config) as node:
        await node.refresh()
    sim.served = sim.history[0]
    async with running_node(config) as node:
        await node.refresh()
        follower = node.lists.followers[sim.url]
        assert follower.refused is not None and follower.refused.code == "rollback"
        assert follower.current is not None and follower.current.version == 2


async def test_a_state_file_changed_on_disk_is_refused_at_start(sim: PartnerSimulator, keys: KeyPaths,
                                                               tmp_path: Path) -> None:
    """The node keeps each list as the signed bytes it fetched and verifies them again at
    start: a list edited in state.db (an image's sha512 changed) is refused, the reason is
    in ``/status``, and nothing is fetched on its word; the catalogue's next list takes over."""
    sim.add_image(IMAGE)
    sim.publish()
    config = config_for(sim, keys, tmp_path)
    async with running_node(config) as node:
        await node.refresh()
        await wait_staged(node, hashlib.sha512(IMAGE).hexdigest())
    good = hashlib.sha512(IMAGE).hexdigest().encode()
    with sqlite3.connect(config.cache_dir / "state.db") as db:
        [(signed,)] = db.execute("SELECT signed FROM lists").fetchall()
        assert good in signed, "the signed bytes as fetched are what is kept"
        db.execute("UPDATE lists SET signed = ?", (signed.replace(good, b"0" * 128),))
    sim.down = True
    async with running_node(config) as node:
        status, body = await node_api(config.socket_path, "GET", "/status")
        [catalogue] = body["catalogues"]
        assert status == 200 and catalogue["refused_code"] == "signature_invalid", catalogue
        assert "saved at the last run" in catalogue["refused"] and catalogue["version"] is None
        assert node.lists.listed() == {}
        sim.down = False
        await node.refresh()
        follower = node.lists.followers[sim.url]
        assert follower.refused is None and follower.current is not None and follower.current.version == sim.version


async def test_an_unchanged_list_is_not_sent_again(sim: PartnerSimulator, keys: KeyPaths, tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    """Conditional GET: a look at an unchanged list costs a 304, and changes nothing (not
    even the log: one list_accepted per version)."""
    caplog.set_level(logging.INFO)
    sim.add_image(IMAGE)
    sim.publish()
    async with running_node(config_for(sim, keys, tmp_path)) as node:
        await node.refresh()
        before = sim.not_modified
        await node.refresh()
        follower = node.lists.followers[sim.url]
        assert sim.not_modified == before + 1 and follower.refused is None and follower.unreachable is None
        assert follower.current is not None and follower.current.version == sim.version
        sim.publish()
        await node.refresh()
        assert follower.current.version == sim.version
    versions = [fields["version"] for fields in logged(caplog, "node.list_accepted")]
    assert versions == sorted(set(versions)) and len(versions) == 2, versions


async def test_bytes_that_pass_piece_hashes_but_not_the_signed_sha512_are_never_staged(
        sim: PartnerSimulator, keys: KeyPaths, tmp_path: Path) -> None:
    """A publisher mismatch: the torrent (and so every piece hash) describes other bytes
    than the list's sha512. BitTorrent accepts them; staging must not."""
    sim.torrents = tmp_path / "sim-torrents"
    sim.torrents.mkdir()
    identifier = sim.add_image(IMAGE)
    sim.wrong_bytes[identifier] = IMAGE[::-1]
    sim.publish()
    config = config_for(sim, keys, tmp_path)
    async with running_node(config) as node:
        await node.refresh()
        sha = hashlib.sha512(IMAGE).hexdigest()
        record = await wait_settled(node, sha)
        assert record.state == "refused" and "sha512 of the downloaded image" in record.reason
        assert "signed list says" in record.reason
        assert list((config.cache_dir / "base").iterdir()) == []
        assert list((config.cache_dir / "data").iterdir()) == [], "the wrong bytes are dropped, not seeded"
        assert node.metrics.verification_failures.labels("image", "image_refused")._value.get() == 1
        await node.refresh()
        assert sha not in node.jobs, "not fetched again until a list names other bytes"


async def test_http_download_cut_halfway_resumes_with_range(sim: PartnerSimulator, keys: KeyPaths, tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    sim.add_image(IMAGE)
    sim.cut_after = len(IMAGE) // 2
    sim.publish()
    async with running_node(config_for(sim, keys, tmp_path)) as node:
        await node.refresh()
        sha = hashlib.sha512(IMAGE).hexdigest()
        # retry_after = 0: the daemon's next plan (this refresh, or a list event) tries again
        await until(lambda: bool(logged(caplog, "node.stage_failed")), "the cut download fails")
        await node.refresh()
        held = await wait_staged(node, sha)
        failures = [str(f.get("reason", "")) for f in logged(caplog, "node.stage_failed")]
        assert len(failures) == 1 and ("broke at" in failures[0] or "ended at" in failures[0]), failures
        assert node.metrics.staged.labels("failed")._value.get() == 1
        assert Path(held.location).read_bytes() == IMAGE, "the partial bytes were never staged"
        resumed_at = int(sim.ranges[-1].removeprefix("bytes=").rstrip("-"))  # type: ignore[union-attr]
        assert 0 < resumed_at <= len(IMAGE) // 2, "the second try asked only for the rest"


async def test_a_server_sending_endless_data_is_cut_at_the_signed_size(sim: PartnerSimulator, keys: KeyPaths,
                                                                       tmp_path: Path) -> None:
    identifier = sim.add_image(IMAGE)
    sim.wrong_bytes[identifier] = IMAGE + bytes(8 * 2**20)
    sim.publish()
    config = config_for(sim, keys, tmp_path)
    async with running_node(config) as node:
        await node.refresh()
        sha = hashlib.sha512(IMAGE).hexdigest()
        record = await wait_settled(node, sha)
        assert record.state == "failed" and "more than hv:size" in record.reason
        assert list((config.cache_dir / "data").iterdir()) == []


async def test_a_list_from_a_revoked_endorser_is_refused_and_the_last_good_one_kept(tmp_path: Path) -> None:
    # a CA of its own: the session's keys stay unrevoked
    own_keys = init_keys(tmp_path / "keys", endorser_dn=ENDORSER_DN, ca_dn="/C=CH/O=vmic test/CN=revoking CA")
    sim = await PartnerSimulator.start(own_keys)
    try:
        sim.add_image(IMAGE)
        sim.publish()
        async with running_node(config_for(sim, own_keys, tmp_path)) as node:
            await node.refresh()
            follower = node.lists.followers[sim.url]
            assert follower.current is not None and follower.refused is None, (follower.refused, follower.unreachable)
            revoke(tmp_path / "keys", own_keys.cert)
            sim.publish()
            await node.refresh()
            assert follower.refused is not None and follower.refused.code == "endorser_revoked"
            assert follower.current.version == sim.version - 1, "the last good list stays in force"
    finally:
        await sim.stop()


async def test_readyz_says_whether_every_list_is_in_force(sim: PartnerSimulator, keys: KeyPaths,
                                                         tmp_path: Path) -> None:
    sim.add_image(IMAGE)
    sim.publish()
    sim.down = True
    config = config_for(sim, keys, tmp_path)
    async with running_node(config) as node:
        status, body = await node_api(config.socket_path, "GET", "/readyz")
        assert status == 503 and body["status"] == "not_ready" and "no list in force" in body["checks"][0]["detail"]
        sim.down = False
        await node.refresh()
        status, body = await node_api(config.socket_path, "GET", "/readyz")
        assert status == 200 and body["checks"][0]["ok"], body
