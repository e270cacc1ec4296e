"""The seeder daemon with a real catalogue and a real libtorrent session (loopback only)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import libtorrent as lt
from support import RunningCatalogue, publish_and_wait, running_seeder, until, write_image

from vmic.pki import KeyPaths


async def test_new_images_are_seeded_at_once_and_revoked_ones_dropped(site, keys: KeyPaths, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    catalogue, tracker, _ = site
    state = tmp_path / "state"
    async with running_seeder(catalogue, keys, state) as seeder:  # polls once an hour: events must do it
        record, torrent = await publish_and_wait(catalogue, write_image(tmp_path / "a.raw", 3 * 2**20), tracker)
        await until(lambda: torrent.btih in seeder.seeding, "the seeder picks up the new image")
        handle = seeder.seeding[torrent.btih].handle
        await until(lambda: handle.status().is_seeding, "seeding")
        assert handle.status().save_path == str(catalogue.catalogue.blobs.path(record["sha512"]).parent), \
            "seeded from the blob store in place"
        assert (state / f"{torrent.btih}.torrent").read_bytes() == torrent.data

        async with catalogue.client() as client:
            await client.revoke(record["identifier"])
        await until(lambda: torrent.btih not in seeder.seeding, "the revoked image is dropped")
        assert not (state / f"{torrent.btih}.torrent").exists()


async def test_restart_resumes_without_hashing_again(site, keys: KeyPaths, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    catalogue, tracker, _ = site
    state = tmp_path / "state"
    _, torrent = await publish_and_wait(catalogue, write_image(tmp_path / "a.raw", 5 * 2**20), tracker)
    async with running_seeder(catalogue, keys, state) as seeder:
        await until(lambda: torrent.btih in seeder.seeding, "seeding")
    assert (state / f"{torrent.btih}.resume").is_file(), "resume data saved on the way out"
    resume = lt.read_resume_data((state / f"{torrent.btih}.resume").read_bytes())
    assert len([p for p in resume.have_pieces if p]) == torrent.info.num_pieces()

    async with running_seeder(catalogue, keys, state) as seeder:
        await until(lambda: torrent.btih in seeder.seeding, "seeding again")
        states = set()
        for _ in range(20):
            status = seeder.seeding[torrent.btih].handle.status()
            states.add(status.state)
            await asyncio.sleep(0.01)
        assert lt.torrent_status.checking_files not in states, "no hashing at start-up"
        assert status.is_seeding and status.num_pieces == torrent.info.num_pieces()


async def test_a_list_from_an_untrusted_signer_is_not_followed(catalogue: RunningCatalogue, keys: KeyPaths,
                                                   other_keys: KeyPaths, tmp_path: Path) -> None:
    from support import ENDORSER_DN, free_port

    from distributor.seeder.daemon import Seeder, SeederConfig
    from vmic.catalogue_source import CatalogueSource

    seeder = Seeder(SeederConfig(CatalogueSource(catalogue.url, other_keys.ca_dir, ENDORSER_DN),  # the wrong CA
                                 blob_dir=catalogue.catalogue.blobs.blob_dir,
                                 state_dir=tmp_path, listen=f"127.0.0.1:{free_port()}"))
    await seeder.start()
    try:
        await seeder.reconcile()
        assert seeder.list_version is None and seeder.seeding == {}
    finally:
        await seeder.close()


async def test_a_seeder_ahead_of_the_tracker_announces_again_soon(site, keys: KeyPaths, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The seeder and the tracker follow the same list; when the seeder announces a new
    torrent before the tracker has re-read the list, it asks again within seconds."""
    catalogue, tracker, _ = site
    _, torrent = await publish_and_wait(catalogue, write_image(tmp_path / "a.raw", 2**20), tracker)
    allowed = tracker.allowlist.hashes
    tracker.allowlist.hashes = frozenset()  # the tracker is "behind"
    async with running_seeder(catalogue, keys, tmp_path / "state") as seeder:
        await until(lambda: torrent.btih in seeder.seeding, "seeding")
        await until(lambda: seeder._quick_retries.get(torrent.btih, 0) >= 1, "the refusal is seen", 15)
        tracker.allowlist.hashes = allowed  # the tracker catches up
        swarm_key = bytes.fromhex(torrent.btih)
        await until(lambda: swarm_key in tracker.swarms.swarms and tracker.swarms.swarms[swarm_key].complete == 1,
                    "the seeder is in the swarm", 8)
