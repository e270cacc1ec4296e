"""Partner mirroring over the partner's swarm: two catalogues, each with its own tracker
and seeder. B subscribes to A; A's list names torrents, so B fetches A's image the way
a node does (vmic.fetch), from A's seeder, and it is verified against A's signed sha512
before it is a blob; B then publishes it with its own torrent, which B's seeder seeds."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from support import publish_and_wait, reserved_port, running_seeder, start_tracker, until, write_image

from vmic.imagelist.extensions import BTIH
from vmic.pki import KeyPaths, init_keys
from vmic.torrents import Torrent

PARTNER_DN = "/C=US/O=Partner site/CN=partner endorser"


async def test_a_partner_image_is_mirrored_over_the_partners_swarm(catalogue_factory: Any, keys: KeyPaths,
                                                                   tmp_path: Path) -> None:
    partner_keys = init_keys(tmp_path / "partner-keys", endorser_dn=PARTNER_DN, ca_dn="/C=US/O=Partner/CN=CA")
    a_port, b_port = reserved_port(), reserved_port()
    site_a = await catalogue_factory(endorser_cert=partner_keys.cert, endorser_key=partner_keys.key,
                                     trackers=f"http://127.0.0.1:{a_port}/announce")
    # B takes partners' images from their swarms only (not their catalogue's web seed)
    site_b = await catalogue_factory(trackers=f"http://127.0.0.1:{b_port}/announce", mirror_web_seed=False)
    tracker_a, runner_a = await start_tracker(site_a.url, partner_keys, "127.0.0.1", a_port, PARTNER_DN)
    tracker_b, runner_b = await start_tracker(site_b.url, keys, "127.0.0.1", b_port)
    try:
        image = write_image(tmp_path / "golden.raw", 6 * 2**20, seed=7)
        record, torrent = await publish_and_wait(site_a, image, tracker_a)
        async with running_seeder(site_a, partner_keys, tmp_path / "seeder-a", endorser_dn=PARTNER_DN) as seeder_a:
            await until(lambda: torrent.btih in seeder_a.seeding, "A's seeder seeding the image", 30)
            async with site_b.client() as client:
                added = await client.subscribe({
                    "url": f"{site_a.url}/imagelist", "ca_pem": partner_keys.ca_cert.read_text(),
                    "endorser_dn": PARTNER_DN, "name": "a", "namespace": "site-a", "interval_seconds": 3600})
            assert added["sync"]["ok"] and added["sync"]["imported"] == [record["identifier"]], added
            handle = seeder_a.seeding[torrent.btih].handle  # libtorrent counts its uploads once a second
            await until(lambda: handle.status().total_payload_upload >= image.stat().st_size,
                        "A's seeder counting every byte of the image as uploaded (B had no web seed)", 30)

        blob = site_b.catalogue.blobs.path(record["sha512"])
        assert hashlib.sha512(blob.read_bytes()).hexdigest() == record["sha512"]
        assert not any((site_b.config.data_dir / "mirror" / "data").iterdir()), "nothing left on its way"

        # B serves it under its own torrent (its tracker), and B's seeder seeds it
        def b_torrent() -> bool:
            listed = site_b.catalogue.listing.current.image_list.image(record["identifier"])
            return listed is not None and BTIH in listed.extra and \
                bytes.fromhex(str(listed.extra[BTIH])) in tracker_b.allowlist

        await until(b_torrent, "B's torrent of the mirrored image, known to B's tracker", 30)
        async with site_b.client(None) as client:
            b_torrent_file = Torrent.parse((await client.fetch(f"/images/{record['identifier']}.torrent")).body)
        assert b_torrent_file.trackers == [f"http://127.0.0.1:{b_port}/announce"]
        async with running_seeder(site_b, keys, tmp_path / "seeder-b") as seeder_b:
            await until(lambda: b_torrent_file.btih in seeder_b.seeding
                        and seeder_b.seeding[b_torrent_file.btih].handle.status().is_seeding,
                        "B's seeder seeding the mirrored image", 30)
    finally:
        await runner_a.cleanup()
        await runner_b.cleanup()
