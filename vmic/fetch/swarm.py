"""The node's BitTorrent side: one libtorrent session that downloads images and keeps
seeding what the node holds to its peers.

- Settings: :mod:`vmic.bittorrent.session` (high-performance-seed preset, no uTP, no
  DHT/LSD, limits apply to LAN peers), with the node's upload/download limits.
- Alerts come through libtorrent's alert fd on the event loop (:mod:`vmic.bittorrent.alerts`).
- A torrent is used only if it matches the signed list: v1 info hash = ``vmic:btih``,
  its one file named by the sha512 (so nothing can name a path), size = ``hv:size``.
- Resume data is saved every few seconds while downloading and on shutdown, to
  ``<torrents>/<btih>.resume``, and vouches only for pieces known to be written
  (:mod:`.disk_flush`: libtorrent counts a piece as had once it passed its hash, which
  can be before it is written). After a crash, a restart continues with those pieces.
- ``fetch`` returns only after the torrent's cached blocks are written: the bytes staging
  reads are on disk; the sha512 hashed while they arrived reads only flushed pieces.
- ``recheck`` forgets the resume data and hashes the file again (then fetches what is
  missing): what the daemon does once if complete bytes fail the signed sha512, before
  it blames the publisher.
- Origin shares (rules :mod:`vmic.bittorrent.share`, I/O :mod:`.shares`): the node asks
  our tracker for its slice of a new image, gives that slice the top piece priority,
  drops the web seed once it holds the slice and takes the web seed back for good if
  peers do not suffice.
- Pieces the signed torrent says are zeros are never fetched (:mod:`.zero_pieces`).
- Pieces that fail their hash are counted (``hash_failures``); libtorrent bans the
  peers that sent them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import libtorrent as lt

from vmic.bittorrent.alerts import AlertPump
from vmic.bittorrent.session import make_session
from vmic.bittorrent.tracker_api import share_url
from vmic.capped import MAX_TORRENT_BYTES, read_capped
from vmic.errors import MalformedTorrent
from vmic.imagelist.extensions import BTIH, TORRENT
from vmic.imagelist.model import Image
from vmic.log import event
from vmic.preheat import node_from_user_agent
from vmic.torrents import Torrent

from ..errors import FetchFailed
from ..private import private_dir
from .disk_flush import CHECKING, DiskFlushes, Flush
from .prefix_hash import PrefixHasher
from .shares import OriginShares
from .zero_pieces import create_hole, zero_pieces

log = logging.getLogger("vmic.swarm")
RESUME_SECONDS = 2.0
TICK_SECONDS = 1.0
QUICK_RETRIES = 10
FLUSH_SECONDS = 60.0  #: for libtorrent to write what its disk cache holds of a finished torrent
REASK_SECONDS = 5.0  #: a flush not answered by then is asked for again



def _complete(status: lt.torrent_status) -> bool:
    """Seeding, and not merely because resume data says so before it was checked
    (right after adding, libtorrent reports the resume data's word)."""
    return bool(status.is_seeding) and status.state not in CHECKING


def _zeros_of(torrent: Torrent) -> list[bool]:
    """The pieces the torrent's own hashes say are zeros (none for a hybrid torrent)."""
    if torrent.btmh is not None:
        return []
    info = torrent.info
    return zero_pieces([info.hash_for_piece(i) for i in range(info.num_pieces())], info.piece_length(),
                       info.total_size())


@dataclass
class Transfer:
    image: Image
    handle: lt.torrent_handle
    done: asyncio.Future[None]
    retries: int = 0


@dataclass
class Swarm:
    data_dir: Path
    torrent_dir: Path
    listen: str
    upload_limit: int = 0
    download_limit: int = 0
    web_seed: bool = True
    user_agent: str = ""
    #: certificate checks of libtorrent's own HTTPS (off where a site CA is used: vmic/bittorrent/session.py)
    verify_https: bool = True
    transfers: dict[str, Transfer] = field(default_factory=dict)  #: by v1 info hash
    hash_failures: int = 0
    _session: lt.session | None = None
    _pump: AlertPump | None = None
    _flushes: DiskFlushes | None = None

    async def start(self) -> None:
        private_dir(self.data_dir)  # downloads and their resume data
        private_dir(self.torrent_dir)
        self._flushes = DiskFlushes(self.torrent_dir)
        self._session = make_session(self.listen, self.upload_limit, self.download_limit, self.user_agent,
                                     self.verify_https)
        self._pump = AlertPump(self._session, self._on_alert)

    async def close(self) -> None:
        for info_hash in list(self.transfers):
            self._flush(info_hash, save=True)
        with contextlib.suppress(asyncio.TimeoutError):
            pending = self._flushes.pending() if self._flushes is not None else []
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in pending)), 10)
        for transfer in self.transfers.values():
            if not transfer.done.done():
                transfer.done.cancel()
        self.transfers.clear()
        self._session = None  # the pump holds the last reference: libtorrent stops in close(), then the pipe goes
        if self._pump is not None:
            self._pump.close()
            self._pump = None  # closing twice is closing once

    @property
    def port(self) -> int:
        assert self._session is not None
        return int(self._session.listen_port())

    # --- torrents ---------------------------------------------------------------------------

    async def torrent_for(self, http: aiohttp.ClientSession, image: Image) -> Torrent:
        """The image's torrent (kept from before, or fetched), checked against the signed list."""
        info_hash = str(image.extra[BTIH])
        path = self.torrent_dir / f"{info_hash}.torrent"
        try:
            if path.is_file():
                torrent = Torrent.parse(path.read_bytes())
            else:
                async with http.get(str(image.extra.get(TORRENT, ""))) as response:
                    response.raise_for_status()
                    torrent = Torrent.parse(await read_capped(response, MAX_TORRENT_BYTES, "the torrent",
                                                              MalformedTorrent))
        except (aiohttp.ClientError, asyncio.TimeoutError, MalformedTorrent, ValueError) as exc:
            raise FetchFailed(f"image {image.identifier}: cannot get its torrent: {exc}") from None
        info = torrent.info
        if torrent.btih != info_hash or info.name() != image.sha512 or info.total_size() != image.size \
                or info.num_files() != 1:
            raise FetchFailed(f"image {image.identifier}: its torrent does not match the signed list")
        path.write_bytes(torrent.data)
        return torrent

    def _add(self, image: Image, torrent: Torrent, seed_mode: bool, piece_priorities: list[int] | None = None,
             zeros: list[bool] | None = None) -> Transfer:
        """Add (or find) the torrent; ``zeros``: its pieces of zeros, declared present in a
        new download (:meth:`_declare`)."""
        assert self._session is not None
        if torrent.btih in self.transfers:
            transfer = self.transfers[torrent.btih]
            if piece_priorities:
                transfer.handle.prioritize_pieces(piece_priorities)
            return transfer
        resume = self.torrent_dir / f"{torrent.btih}.resume"
        if resume.is_file() and not (self.data_dir / image.sha512).is_file():
            # resume data vouching for bytes that are gone (removed while the daemon was
            # down): libtorrent could report the torrent complete before it notices
            resume.unlink()
        if resume.is_file():
            params = lt.read_resume_data(resume.read_bytes())
            params.ti = torrent.info
        else:
            params = lt.add_torrent_params()
            params.ti = torrent.info
            if seed_mode:
                params.flags |= lt.torrent_flags.seed_mode  # verified whole by sha512 at staging
            else:
                params.have_pieces = self._declare(image, zeros or [])
        params.save_path = str(self.data_dir)
        if piece_priorities:
            params.piece_priorities = piece_priorities
        if not self.web_seed:
            params.url_seeds = []
        handle = self._session.add_torrent(params)
        if not self.web_seed:
            for url in handle.url_seeds():
                handle.remove_url_seed(url)
        else:  # resume data saved while a share had the web seed off must not keep it off
            for url in torrent.web_seeds:
                handle.add_url_seed(url)
        transfer = Transfer(image, handle, asyncio.get_running_loop().create_future())
        self.transfers[torrent.btih] = transfer
        if _complete(handle.status()):
            transfer.done.set_result(None)
        return transfer

    def _declare(self, image: Image, zeros: list[bool]) -> list[bool]:
        """``zeros`` (the pieces the signed torrent says are zeros) to declare present, in a
        new file that is one hole (:mod:`.zero_pieces`); none if the file exists."""
        if not any(zeros) or not create_hole(self.data_dir / image.sha512, image.size):
            return []
        event(log, "swarm.zero_pieces", image=image.identifier, pieces=sum(zeros), of=len(zeros))
        return zeros

    async def fetch(self, image: Image, torrent: Torrent, progress: Callable[[int], None],
                    http: aiohttp.ClientSession | None = None, stall_seconds: float = 600,
                    on_sha512: Callable[[str], None] | None = None) -> Path:
        """Download until complete (resuming what is there); the path of the bytes. With
        ``http`` and a node name, the node takes its origin share (:mod:`vmic.bittorrent.share`).
        ``on_sha512``: told the sha512 of the file's bytes, hashed while they arrived
        (:mod:`vmic.fetch.prefix_hash`), before this returns."""
        shares = OriginShares(torrent.btih, self._share_url(torrent, http), torrent.web_seeds)
        zeros = _zeros_of(torrent)
        first = await shares.first(http, torrent.info.num_pieces(), zeros) if http is not None else None
        transfer = self._add(image, torrent, seed_mode=False, piece_priorities=first, zeros=zeros)
        shares.handle = transfer.handle
        share = shares.policy.share
        event(log, "swarm.fetching", image=image.identifier, btih=torrent.btih,
              share=f"{share.index}/{share.count}" if share else None)
        hasher = PrefixHasher(self.data_dir / image.sha512, torrent.info.piece_length(), image.size) \
            if on_sha512 is not None else None
        try:
            await self._download(image, torrent.btih, transfer, shares, hasher, progress, http, stall_seconds)
            if not await self._written(torrent.btih):  # staging hashes the file whole, whatever the hasher says
                event(log, "swarm.flush_late", level=logging.WARNING, image=image.identifier, seconds=FLUSH_SECONDS)
            if hasher is not None and on_sha512 is not None:
                with contextlib.suppress(OSError):  # unread: staging hashes the file whole instead
                    on_sha512(await hasher.finish())
        finally:
            if hasher is not None:
                hasher.cancel()
        progress(image.size)
        return self.data_dir / image.sha512

    async def _download(self, image: Image, btih: str, transfer: Transfer, shares: OriginShares,
                        hasher: PrefixHasher | None, progress: Callable[[int], None],
                        http: aiohttp.ClientSession | None, stall_seconds: float) -> None:
        """Until every piece is in and checked (or the transfer stalls for ``stall_seconds``).
        Each tick with no flush outstanding, the blocks libtorrent holds are flushed (and every
        :data:`RESUME_SECONDS`, resume data saved); the hasher reads the pieces of the last
        flush answered. A flush unanswered for :data:`REASK_SECONDS` (an alert lost from a
        full queue) is asked again: a later answer covers every earlier request."""
        last, still, ticks, saved_at = -1, 0.0, 0, 0
        asked: deque[tuple[int, Flush]] = deque()  #: flushes not answered yet, with the tick of asking
        while not transfer.done.done():
            await asyncio.wait([transfer.done], timeout=TICK_SECONDS)
            ticks += 1
            status = transfer.handle.status()
            progress(status.total_wanted_done)
            answered = None
            while asked and asked[0][1].done.is_set():
                answered = asked.popleft()[1]
            if hasher is not None and answered is not None and answered.pieces is not None:
                hasher.advance(answered.pieces)
            if not asked or ticks - asked[-1][0] >= REASK_SECONDS / TICK_SECONDS:
                save = ticks - saved_at >= RESUME_SECONDS / TICK_SECONDS
                request = self._flush(btih, save, status)
                if request is not None:
                    asked.append((ticks, request))
                    saved_at = ticks if save else saved_at
            if _complete(status) and not transfer.done.done():  # complete once its resume data was checked
                transfer.done.set_result(None)
            if http is not None:
                await shares.step(http, list(status.pieces), TICK_SECONDS)
            if status.total_wanted_done == last:
                still += TICK_SECONDS
                if still >= stall_seconds:
                    raise FetchFailed(f"image {image.identifier}: no progress for {stall_seconds:.0f} s "
                                      f"({last} of {image.size} bytes; no peer or web seed answers)")
            else:
                last, still = status.total_wanted_done, 0.0
        transfer.done.result()  # raises the torrent's error, if any

    async def recheck(self, image: Image, torrent: Torrent, progress: Callable[[int], None],
                      http: aiohttp.ClientSession | None = None) -> Path:
        """Hash the bytes on disk again, fetch what fails, and return when complete."""
        self.drop(torrent.btih)
        (self.torrent_dir / f"{torrent.btih}.resume").unlink(missing_ok=True)
        event(log, "swarm.recheck", image=image.identifier, btih=torrent.btih)
        return await self.fetch(image, torrent, progress, http)

    def _share_url(self, torrent: Torrent, http: aiohttp.ClientSession | None) -> str | None:
        name = node_from_user_agent(self.user_agent)
        if http is None or not self.web_seed or not name:
            return None
        return share_url(torrent.trackers, torrent.btih, name)

    def seed(self, image: Image, torrent: Torrent) -> None:
        """Seed bytes the node already verified (at start-up, for what it holds)."""
        self._add(image, torrent, seed_mode=True)

    def drop(self, info_hash: str, delete: bool = False) -> None:
        """Stop sharing a torrent; with ``delete``, forget its bytes and resume data too."""
        assert self._session is not None
        transfer = self.transfers.pop(info_hash, None)
        if transfer is not None:
            self._session.remove_torrent(transfer.handle)
            if self._flushes is not None:
                self._flushes.forget(info_hash)
            if not transfer.done.done():
                transfer.done.set_exception(FetchFailed(f"image {transfer.image.identifier}: download cancelled"))
                transfer.done.exception()  # retrieved: nobody may be waiting
        if delete:
            for suffix in (".torrent", ".resume"):
                (self.torrent_dir / f"{info_hash}{suffix}").unlink(missing_ok=True)

    def _flush(self, info_hash: str, save: bool = False, status: lt.torrent_status | None = None) -> Flush | None:
        """Have the torrent's cached blocks written (:mod:`.disk_flush`); with ``save``,
        then save resume data for the pieces written."""
        transfer = self.transfers.get(info_hash)
        if transfer is None or self._flushes is None:
            return None
        return self._flushes.flush(info_hash, transfer.handle, save, status)

    async def _written(self, info_hash: str) -> bool:
        """Until the torrent's cached blocks are written and its resume data saved, asking
        again every :data:`REASK_SECONDS`; False after :data:`FLUSH_SECONDS` (or if the
        torrent is gone)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FLUSH_SECONDS
        while loop.time() < deadline and (request := self._flush(info_hash, save=True)) is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(request.done.wait(), REASK_SECONDS)
                return True
        return False

    # --- alerts and numbers -------------------------------------------------------------------

    def _on_alert(self, alert: lt.alert) -> None:
        if isinstance(alert, (lt.cache_flushed_alert, lt.save_resume_data_alert, lt.save_resume_data_failed_alert)):
            if self._flushes is not None:
                self._flushes.on_alert(alert)
        elif isinstance(alert, lt.torrent_finished_alert):
            transfer = self.transfers.get(str(alert.handle.info_hashes().v1))
            if transfer is not None and not transfer.done.done():
                transfer.done.set_result(None)
        elif isinstance(alert, lt.hash_failed_alert):
            self.hash_failures += 1
            event(log, "swarm.piece_failed", level=logging.WARNING, piece=alert.piece_index,
                  btih=str(alert.handle.info_hashes().v1))
        elif isinstance(alert, lt.peer_ban_alert):
            event(log, "swarm.peer_banned", level=logging.WARNING, peer=str(alert.endpoint))
        elif isinstance(alert, (lt.file_error_alert, lt.torrent_error_alert)):
            transfer = self.transfers.get(str(alert.handle.info_hashes().v1))
            event(log, "swarm.torrent_error", level=logging.ERROR, message=alert.message())
            if transfer is not None and not transfer.done.done():
                transfer.done.set_exception(FetchFailed(f"image {transfer.image.identifier}: {alert.message()}"))
        elif isinstance(alert, lt.tracker_error_alert) and "unknown torrent" in alert.message():
            # the tracker follows the same list and may not have read it yet: ask again soon
            transfer = self.transfers.get(str(alert.handle.info_hashes().v1))
            if transfer is not None and transfer.retries < QUICK_RETRIES:
                transfer.retries += 1
                alert.handle.force_reannounce(2)

    def payload_by_torrent(self) -> tuple[dict[str, int], dict[str, int]]:
        """Payload bytes downloaded and uploaded by each torrent in the session now (by v1
        info hash; counted since it was added)."""
        down, up = {}, {}
        for info_hash, transfer in self.transfers.items():
            status = transfer.handle.status()
            down[info_hash], up[info_hash] = status.total_payload_download, status.total_payload_upload
        return down, up

    def totals(self) -> tuple[int, int]:
        """Payload bytes downloaded and uploaded by the torrents in the session now."""
        down, up = self.payload_by_torrent()
        return sum(down.values()), sum(up.values())
