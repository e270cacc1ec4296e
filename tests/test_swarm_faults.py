"""Faults in a real swarm (libtorrent on loopback): a peer sending corrupt pieces, the
tracker going down, a seeder killed with SIGKILL, the catalogue (the web seed) going away
under a crowd."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import libtorrent as lt
import pytest
from aiohttp import web
from prometheus_client import generate_latest
from support import ENDORSER_DN, free_port, publish_and_wait, running_seeder, until, write_image

from distributor.seeder.web import SeederMetrics
from vmic.bittorrent.alerts import AlertPump
from vmic.bittorrent.session import make_session
from vmic.pki import KeyPaths
from vmic.torrents import Torrent


class Peer:
    """A libtorrent downloader on loopback (a node's download, in miniature)."""

    def __init__(self, torrent: Torrent, save_path: Path, use_tracker: bool = True) -> None:
        #: (alert type, peer endpoint if any): copied at once, since an alert dies at the next pop
        self.alerts: list[tuple[type, tuple[str, int] | None]] = []
        self.session = make_session(f"127.0.0.1:{free_port()}")
        # every alert, and room for them on a busy machine (a full queue drops alerts)
        self.session.apply_settings({"alert_mask": lt.alert_category.all, "alert_queue_size": 100_000})
        self.pump = AlertPump(self.session, self._record)
        params = lt.add_torrent_params()
        metainfo = lt.bdecode(torrent.data)
        if not use_tracker:  # only the peers the test connects (the info dict, and so the hash, unchanged)
            metainfo.pop(b"announce", None)
            metainfo.pop(b"announce-list", None)
        params.ti = lt.torrent_info(lt.bencode(metainfo))
        params.save_path = str(save_path)
        self.handle = self.session.add_torrent(params)

    def _record(self, alert: lt.alert) -> None:
        endpoint = getattr(alert, "endpoint", None)
        self.alerts.append((type(alert), (str(endpoint[0]), int(endpoint[1])) if endpoint else None))

    def saw(self, kind: type) -> bool:
        return any(k is kind for k, _ in self.alerts)

    def close(self) -> None:
        del self.handle
        self.session = None  # type: ignore[assignment]
        self.pump.close()


@pytest.fixture
async def no_web_seed(site) -> AsyncIterator[None]:  # type: ignore[no-untyped-def]
    """Make the catalogue's web seed unreachable once the test calls it (peers only)."""
    catalogue = site[0]

    async def stop() -> None:
        await catalogue.runner.shutdown()
        await catalogue.runner.cleanup()
        catalogue.runner = web.AppRunner(web.Application())
        await catalogue.runner.setup()

    yield stop  # type: ignore[misc]




def sha512_of(path: Path) -> str:
    return hashlib.sha512(path.read_bytes()).hexdigest()


class CorruptPeer:
    """A hostile BitTorrent peer (wire protocol by hand, BEP 3): it claims every piece and
    answers every request with random bytes."""

    def __init__(self, torrent: Torrent) -> None:
        self.info_hash = bytes.fromhex(torrent.btih)
        self.pieces = torrent.info.num_pieces()
        self.blocks_sent = 0
        self.server: asyncio.base_events.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            handshake = await reader.readexactly(68)
            if handshake[28:48] != self.info_hash:
                return
            writer.write(b"\x13BitTorrent protocol" + bytes(8) + self.info_hash + b"-EV0001-" + os.urandom(12))
            bitfield = bytearray((self.pieces + 7) // 8)
            for index in range(self.pieces):
                bitfield[index // 8] |= 0x80 >> (index % 8)
            writer.write(_message(5, bytes(bitfield)) + _message(1))  # have everything; unchoke
            while True:
                length = int.from_bytes(await reader.readexactly(4), "big")
                if length == 0:
                    continue  # keep-alive
                body = await reader.readexactly(length)
                if body[0] == 6:  # request: index, begin, length
                    index, begin, size = (int.from_bytes(body[i:i + 4], "big") for i in (1, 5, 9))
                    writer.write(_message(7, body[1:9] + os.urandom(size)))
                    self.blocks_sent += 1
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


def _message(kind: int, payload: bytes = b"") -> bytes:
    return (len(payload) + 1).to_bytes(4, "big") + bytes([kind]) + payload


async def test_a_peer_sending_corrupt_pieces_is_banned_and_the_image_arrives_intact(
        site, no_web_seed, keys: KeyPaths, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    catalogue, tracker, _ = site
    record, torrent = await publish_and_wait(catalogue, write_image(tmp_path / "a.raw", 8 * 2**20), tracker)
    evil = CorruptPeer(torrent)
    evil_port = await evil.start()
    downloader = None
    try:
        async with running_seeder(catalogue, keys, tmp_path / "seeder") as seeder:
            await until(lambda: torrent.btih in seeder.seeding, "the seeder seeds")
            await no_web_seed()  # peers only
            downloader = Peer(torrent, tmp_path / "node", use_tracker=False)
            downloader.handle.connect_peer(("127.0.0.1", evil_port))  # the corrupt peer first
            await until(lambda: downloader.saw(lt.peer_ban_alert),
                        "the corrupt peer is banned")
            assert evil.blocks_sent > 0
            # its pieces failed: counted by the torrent (an alert can be dropped from a full queue)
            assert downloader.handle.status().total_failed_bytes > 0, "its pieces failed"
            assert downloader.handle.status().num_pieces == 0, "no corrupt piece was kept"
            host, port = seeder.config.listen.rsplit(":", 1)
            downloader.handle.connect_peer((host, int(port)))  # an honest peer
            await until(lambda: downloader.handle.status().is_seeding, "the download completes")
        banned = {endpoint[1] for kind, endpoint in downloader.alerts if kind is lt.peer_ban_alert and endpoint}
        assert banned == {evil_port}
        assert sha512_of(tmp_path / "node" / record["sha512"]) == record["sha512"]
    finally:
        if downloader is not None:
            downloader.close()
        evil.close()


async def test_downloads_go_on_when_the_tracker_is_down(site, keys: KeyPaths, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    catalogue, tracker, _ = site
    record, torrent = await publish_and_wait(catalogue, write_image(tmp_path / "a.raw", 4 * 2**20), tracker)
    tracker.allowlist.hashes = frozenset()  # the tracker fails every announce from now on
    downloader = Peer(torrent, tmp_path / "node")
    try:
        await until(lambda: downloader.handle.status().is_seeding, "completion from the web seed alone")
        assert downloader.saw(lt.tracker_error_alert), "the tracker did fail"
    finally:
        downloader.close()
    assert sha512_of(tmp_path / "node" / record["sha512"]) == record["sha512"]


async def test_a_seeder_killed_with_sigkill_seeds_again_without_hashing(site, keys: KeyPaths, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    catalogue, tracker, _ = site
    _, torrent = await publish_and_wait(catalogue, write_image(tmp_path / "a.raw", 6 * 2**20), tracker)
    port = free_port()
    config = tmp_path / "seeder.toml"
    config.write_text(
        f'[seeder.catalogue]\nurl = "{catalogue.url}"\nca = "{keys.ca_dir}"\nendorser_dn = "{ENDORSER_DN}"\n[seeder]\n'
        f'blob_dir = "{catalogue.catalogue.blobs.blob_dir}"\nstate_dir = "{tmp_path / "state"}"\n'
        f'listen = "127.0.0.1:{port}"\n')

    async def start() -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "distributor.cli", "seeder", "-c",
                                                    str(config), stderr=asyncio.subprocess.PIPE)
        assert proc.stderr is not None
        while b"seeder.seeding" not in await asyncio.wait_for(proc.stderr.readline(), 30):
            pass
        return proc

    first = await start()
    downloader = Peer(torrent, tmp_path / "node")
    try:
        downloader.session.apply_settings({"download_rate_limit": 2 * 2**20})  # still running when the kill comes
        downloader.handle.connect_peer(("127.0.0.1", port))
        await until(lambda: downloader.handle.status().total_wanted_done > 0, "bytes flow from the seeder")
        os.kill(first.pid, signal.SIGKILL)  # mid-transfer; no resume data saved on the way out
        await first.wait()
        swarm = tracker.swarms.swarms[bytes.fromhex(torrent.btih)]
        swarm.peers.pop(("127.0.0.1", port), None)  # forget the killed seeder's last announce
        second = await start()
        try:
            # a seeder that hashed its image again would first announce it lacked bytes (left > 0)
            await until(lambda: ("127.0.0.1", port) in swarm.peers, "the restarted seeder announces", 10)
            assert swarm.peers[("127.0.0.1", port)].left == 0, "seeding at once, without hashing"
            downloader.handle.connect_peer(("127.0.0.1", port))
            await until(lambda: downloader.handle.status().is_seeding, "the download completes from the restarted seeder")
        finally:
            second.send_signal(signal.SIGTERM)
            await second.communicate()
    finally:
        downloader.close()


async def test_the_seeder_holds_back_for_the_web_seed_and_serves_in_full_when_the_catalogue_goes(
        site, no_web_seed, keys: KeyPaths, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A crowd takes a new image from the catalogue's web seed: the seeder, on the same link,
    holds back (what it sent on top was a second copy from the origin). The catalogue goes
    away, its web seed with it: the seeder notices within seconds and is the origin again."""
    catalogue, tracker, _ = site
    record, torrent = await publish_and_wait(catalogue, write_image(tmp_path / "a.raw", 8 * 2**20), tracker)
    crowd: list[Peer] = []
    try:
        async with running_seeder(catalogue, keys, tmp_path / "seeder", web_seed_yield=64 * 1024) as seeder:
            await until(lambda: torrent.btih in seeder.seeding, "the seeder seeds")
            seeding = seeder.seeding[torrent.btih]
            host, port = seeder.config.listen.rsplit(":", 1)
            for i in range(3):  # a crowd, each held to 128 KiB/s so that it is still downloading
                peer = Peer(torrent, tmp_path / f"node{i}")
                peer.session.apply_settings({"download_rate_limit": 128 * 1024})
                peer.handle.connect_peer((host, int(port)))
                crowd.append(peer)
            await until(lambda: seeding.serving.yielding, "the seeder holds back for the web seed")
            assert seeding.handle.upload_limit() == 64 * 1024
            metrics = SeederMetrics(seeder)
            metrics.refresh()
            assert b"vmic_seeder_yielding_torrents 1.0" in generate_latest(metrics.registry)

            await no_web_seed()
            await until(lambda: not seeding.serving.yielding, "the seeder sees the catalogue gone", seconds=60)
            assert seeding.handle.upload_limit() <= 0 and seeder.follower.unreachable
            for peer in crowd:
                peer.session.apply_settings({"download_rate_limit": 0})
            await until(lambda: all(p.handle.status().is_seeding for p in crowd), "the crowd completes without it")
            # what the seeder sent was pieces: peers connected before super-seeding went on once
            # asked for pieces it rejected, again at once, at megabytes a second and for a minute
            sent = seeding.handle.status()
            assert sent.total_payload_upload > 0
            assert sent.total_upload < 1.5 * sent.total_payload_upload + 2**20, (sent.total_upload,
                                                                                 sent.total_payload_upload)
    finally:
        for peer in crowd:
            peer.close()
    for i in range(3):
        assert sha512_of(tmp_path / f"node{i}" / record["sha512"]) == record["sha512"]
