"""The seeder daemon.

It follows its catalogue's *verified* list (``/events`` for immediacy, a poll as
fallback) and keeps one torrent per current image in its libtorrent session:

- a new image: its ``.torrent`` is fetched and checked against the signed list (v1
  info hash = ``vmic:btih``, file name = the sha512, size = ``hv:size``), then seeded
  from the blob store in place (``<blob_dir>/<2 hex>/<sha512>``, no copy);
- an image gone from the list: its torrent leaves the session (the file stays: it is
  the catalogue's);
- state across restarts: each torrent's resume data is saved in ``state_dir``, so a
  restart seeds at once, without hashing the images again. The first time, the
  torrent is added in *seed mode* (no hashing either): the catalogue verified the
  blob's sha512 when it stored it, and blobs never change.

    [seeder]
    blob_dir = "/var/lib/vmic/blobs/sha512"
    state_dir = "/var/lib/vmic-seeder"
    listen = "0.0.0.0:6881"

    [seeder.catalogue]                  # as every follower's (vmic/catalogue_source.py)
    url = "https://catalogue.example:8470"
    ca = "/etc/vmic/ca"
    endorser_dn = "/C=CH/O=Site/CN=endorser"
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import libtorrent as lt

from vmic.bittorrent.alerts import AlertPump
from vmic.bittorrent.session import make_session
from vmic.capped import MAX_TORRENT_BYTES, read_capped
from vmic.config import Duration, Listen, OptionalListen, Size
from vmic.errors import MalformedTorrent
from vmic.follow import FollowsCatalogue, ListFollower, follower_session
from vmic.imagelist.extensions import BTIH, TORRENT
from vmic.imagelist.model import Image, ImageList
from vmic.log import event
from vmic.torrents import Torrent

from .crowd import CrowdRules, Serving, serving

log = logging.getLogger("distributor.seeder")

#: re-announces, 2 s apart, after the tracker did not know a new torrent yet
QUICK_RETRIES = 10
#: while the seeder holds back for the web seed, how often it checks that the catalogue answers
YIELD_LOOK_SECONDS = 5.0
#: after super-seeding went on or off (and the image's peers were dropped), how long the
#: crowd is taken to be as it was while they come back
SWITCH_SETTLE_SECONDS = 10.0


@dataclass(frozen=True)
class SeederConfig(FollowsCatalogue):
    #: the catalogue's blob store (``<data_dir>/blobs/sha512``), seeded in place, read only
    blob_dir: Path
    #: resume data, so that a restart seeds at once without hashing
    state_dir: Path
    #: where BitTorrent peers reach this seeder
    listen: Listen = "127.0.0.1:6881"
    #: bytes per second for all uploads, 0 for no limit
    upload_limit: Size = 0
    #: BitTorrent super-seeding while at least ``super_seed_leechers`` peers download an
    #: image: each piece goes to one peer, and the next only once it has spread, so the
    #: nodes' uploads carry more of the load (tools/bench/swarm.py, 256 MiB, N = 8 / 16:
    #: T/T* 1.40 -> 1.26 / 1.63 -> 1.40, origin copies 2.08 -> 1.86 / 2.65 -> 2.15). With
    #: fewer, it seeds normally: a lone downloader without the web seed would otherwise get
    #: one piece at a time. Each switch drops the image's peers, so that each hears the new
    #: mode (distributor/seeder/crowd.py).
    super_seed: bool = True
    #: (see super_seed)
    super_seed_leechers: int = 3
    #: bytes per second per image while at least ``super_seed_leechers`` peers download it
    #: and the catalogue, its web seed, answers: the nodes take each piece from the web seed
    #: once, and what the seeder sends them on top is a second copy over the same link
    #: (distributor/seeder/crowd.py). 0: never hold back
    web_seed_yield: Size = 128 * 1024
    #: re-read the catalogue's list at least this often (its event stream is faster)
    poll_interval: Duration = 60.0
    #: host:port of a plain-HTTP listener for /metrics, /healthz and /readyz (empty: none)
    metrics_listen: OptionalListen = ""
    #: debug, info, warning or error (reloaded on SIGHUP)
    log_level: str = "info"


@dataclass
class Seeding:
    image: Image
    torrent: Torrent
    handle: lt.torrent_handle
    serving: Serving  #: as libtorrent was last told
    has_web_seed: bool  #: the torrent names one (BEP 19 ``url-list``): the catalogue's
    switched_at: float = -math.inf  #: when super-seeding last went on or off (time.monotonic)


@dataclass
class Seeder:
    config: SeederConfig
    seeding: dict[str, Seeding] = field(default_factory=dict)  #: by v1 info hash
    _session: lt.session | None = None
    _pump: AlertPump | None = None
    _http: aiohttp.ClientSession | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _resume_saved: dict[str, asyncio.Event] = field(default_factory=dict)
    _quick_retries: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.follower = ListFollower(self.config.catalogue, log)
        self.rules = CrowdRules(self.config.super_seed, self.config.super_seed_leechers, self.config.web_seed_yield)

    @property
    def list_version(self) -> int | None:
        return self.follower.current.version if self.follower.current is not None else None

    # --- life cycle ---------------------------------------------------------------------

    async def start(self) -> None:
        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        self._session = make_session(self.config.listen, self.config.upload_limit,
                                     verify_https=self.config.catalogue.tls_ca is None)  # see its docstring
        self._pump = AlertPump(self._session, self._on_alert)
        self._http = follower_session([self.config.catalogue.tls_ca])

    async def close(self) -> None:
        """Save every torrent's resume data, then stop (the session before its alert pipe)."""
        for info_hash, seeding in self.seeding.items():
            self._resume_saved[info_hash] = asyncio.Event()
            seeding.handle.save_resume_data(lt.save_resume_flags_t.save_info_dict)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in self._resume_saved.values())), 10)
        self.seeding.clear()
        self._session = None  # the pump holds the last reference: libtorrent stops in close(), then the pipe goes
        if self._pump is not None:
            self._pump.close()
        if self._http is not None:
            await self._http.close()

    async def run(self) -> None:
        """Follow the catalogue until cancelled."""
        assert self._http is not None
        tuner = asyncio.create_task(self._serve_crowds())
        try:
            await self.follower.follow(self._http, self.seed, self.config.poll_interval)
        finally:
            tuner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await tuner

    async def _serve_crowds(self, every: float = 1.0) -> None:
        """Every second, how to serve each image (:func:`distributor.seeder.crowd.serving`).
        While it holds back on any, it looks at the catalogue's list every
        :data:`YIELD_LOOK_SECONDS` (a conditional GET): a catalogue gone away, and its web
        seed with it, is noticed within seconds rather than at the next poll."""
        since_look = 0.0
        while True:
            await asyncio.sleep(every)
            since_look += every
            try:
                if since_look >= YIELD_LOOK_SECONDS and any(s.serving.yielding for s in self.seeding.values()):
                    since_look = 0.0
                    await self.reconcile()
                answers = self.follower.current is not None and self.follower.unreachable is None
                for seeding in list(self.seeding.values()):
                    self._serve(seeding, answers)
            except Exception:  # one bad round (a torrent dropped meanwhile): the next second tries again
                log.exception("seeder.serving_failed")

    def _serve(self, seeding: Seeding, catalogue_answers: bool) -> None:
        status = seeding.handle.status()
        settled = time.monotonic() - seeding.switched_at >= SWITCH_SETTLE_SECONDS
        want = serving(status.num_peers - status.num_seeds, seeding.has_web_seed, catalogue_answers, self.rules,
                       seeding.serving, settled)
        if want.super_seeding != seeding.serving.super_seeding:
            if want.super_seeding:
                seeding.handle.set_flags(lt.torrent_flags.super_seeding)
            else:
                seeding.handle.unset_flags(lt.torrent_flags.super_seeding)
            # Peers connected before the switch keep what they were told then: a peer that heard
            # "have all" before super-seeding asks for pieces the super-seed rejects, again at once,
            # forever (measured: 2 MB/s of requests and rejects per peer, no payload, a crowd
            # stalled for a minute). Dropping the connections makes every peer hear the new mode.
            seeding.handle.pause()
            seeding.handle.resume()
            seeding.switched_at = time.monotonic()
            event(log, "seeder.super_seeding", on=want.super_seeding, image=seeding.image.identifier,
                  peers=status.num_peers)
        if want.upload_limit != seeding.serving.upload_limit:
            seeding.handle.set_upload_limit(want.upload_limit)
            event(log, "seeder.yielding", on=want.yielding, image=seeding.image.identifier,
                  peers=status.num_peers, limit=want.upload_limit)
        seeding.serving = want

    # --- following the list --------------------------------------------------------------

    async def reconcile(self) -> None:
        """Look at the catalogue's list once, and seed what it names."""
        assert self._http is not None
        image_list = await self.follower.look(self._http)
        if image_list is not None:
            await self.seed(image_list)

    async def seed(self, image_list: ImageList) -> None:
        """Seed what the verified list names; drop what it no longer names."""
        async with self._lock:
            wanted = {str(i.extra[BTIH]): i for i in image_list.images if BTIH in i.extra}
            for info_hash in set(self.seeding) - set(wanted):
                self._drop(info_hash)
            for info_hash, image in wanted.items():
                if info_hash not in self.seeding:
                    try:
                        await self._add(info_hash, image)
                    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, RuntimeError,
                            MalformedTorrent) as exc:
                        event(log, "seeder.add_failed", level=logging.WARNING, image=image.identifier, reason=str(exc))

    async def _add(self, info_hash: str, image: Image) -> None:
        assert self._http is not None and self._session is not None
        torrent = self._known_torrent(info_hash)
        if torrent is None:
            async with self._http.get(str(image.extra[TORRENT])) as response:
                response.raise_for_status()
                torrent = Torrent.parse(await read_capped(response, MAX_TORRENT_BYTES, "the torrent", MalformedTorrent))
        info = torrent.info
        if torrent.btih != info_hash or info.name() != image.sha512 or info.total_size() != image.size:
            raise ValueError(f"torrent of image {image.identifier} does not match the signed list")
        blob_dir = self.config.blob_dir / image.sha512[:2]
        if not (blob_dir / image.sha512).is_file():
            raise RuntimeError(f"blob of image {image.identifier} is not in {self.config.blob_dir}")
        resume = self._state(info_hash, ".resume")
        if resume.is_file():
            params = lt.read_resume_data(resume.read_bytes())
            params.ti = info
        else:
            params = lt.add_torrent_params()
            params.ti = info
            params.flags |= lt.torrent_flags.seed_mode  # verified by sha512 on upload; never rehash
        params.save_path = str(blob_dir)
        handle = self._session.add_torrent(params)
        self._state(info_hash, ".torrent").write_bytes(torrent.data)
        as_resumed = Serving(super_seeding=bool(handle.flags() & lt.torrent_flags.super_seeding),
                             upload_limit=max(0, handle.upload_limit()))  # resume data keeps both
        self.seeding[info_hash] = Seeding(image, torrent, handle, as_resumed, bool(torrent.web_seeds))
        event(log, "seeder.seeding", image=image.identifier, btih=info_hash, resumed=resume.is_file())

    def _drop(self, info_hash: str) -> None:
        assert self._session is not None
        seeding = self.seeding.pop(info_hash)
        self._session.remove_torrent(seeding.handle)  # the blob stays: it is the catalogue's
        for suffix in (".torrent", ".resume"):
            self._state(info_hash, suffix).unlink(missing_ok=True)
        event(log, "seeder.dropped", image=seeding.image.identifier, btih=info_hash)

    def _state(self, info_hash: str, suffix: str) -> Path:
        return self.config.state_dir / f"{info_hash}{suffix}"

    def _known_torrent(self, info_hash: str) -> Torrent | None:
        path = self._state(info_hash, ".torrent")
        return Torrent.parse(path.read_bytes()) if path.is_file() else None

    # --- alerts and status ---------------------------------------------------------------

    def _on_alert(self, alert: lt.alert) -> None:
        if isinstance(alert, lt.save_resume_data_alert):
            info_hash = str(alert.handle.info_hashes().v1)
            self._state(info_hash, ".resume").write_bytes(lt.write_resume_data_buf(alert.params))
            if info_hash in self._resume_saved:
                self._resume_saved[info_hash].set()
        elif isinstance(alert, lt.save_resume_data_failed_alert):
            info_hash = str(alert.handle.info_hashes().v1)
            if info_hash in self._resume_saved:
                self._resume_saved[info_hash].set()
        elif isinstance(alert, lt.tracker_error_alert) and "unknown torrent" in alert.message():
            # The tracker follows the same list and may not have re-read it yet: ask again soon
            # rather than after libtorrent's long back-off (a few times, then the back-off rules).
            info_hash = str(alert.handle.info_hashes().v1)
            tries = self._quick_retries.get(info_hash, 0)
            if tries < QUICK_RETRIES:
                self._quick_retries[info_hash] = tries + 1
                alert.handle.force_reannounce(2)
        elif isinstance(alert, (lt.torrent_error_alert, lt.file_error_alert)):
            event(log, "seeder.torrent_error", level=logging.ERROR, message=alert.message())

    def status(self) -> list[dict[str, Any]]:
        rows = []
        for info_hash, seeding in self.seeding.items():
            s = seeding.handle.status()
            rows.append({"image": seeding.image.identifier, "btih": info_hash, "state": str(s.state),
                         "seeding": s.is_seeding, "peers": s.num_peers, "uploaded": s.total_upload,
                         "super_seeding": seeding.serving.super_seeding, "yielding": seeding.serving.yielding})
        return rows
