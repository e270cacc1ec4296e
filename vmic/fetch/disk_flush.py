"""Which downloaded pieces are on disk, and resume data that vouches for no more than those.

libtorrent 2.1 (its pread disk I/O) counts a piece as had once it passed its hash, while
its blocks may still wait in the disk cache. ``save_resume_data`` with ``flush_disk_cache``
does not wait for that flush: it queues the flush and posts its alert at once
(``torrent::save_resume_data`` in torrent.cpp). A CI run read a file right after such a
"flushed" save and found blocks not written yet. So:

- :meth:`DiskFlushes.flush` asks libtorrent to write the torrent's cached blocks
  (``flush_cache``, a fence job: it runs after every disk job queued before it) and keeps
  the pieces had at that moment. When ``cache_flushed_alert`` answers, they are on disk.
- A flush with ``save`` then saves resume data whose pieces are those flushed ones, and
  without partial pieces (their blocks may be in the cache still), so after a SIGKILL a
  restart may fetch some bytes again but never trusts bytes that are not there.
- A flush asked while libtorrent still checks the torrent (its resume data, or its files)
  leaves what libtorrent saves as it is: nothing was downloaded since it was added, and
  what a check finds it read from disk. (Meanwhile its status shows no piece: masking
  with that would save resume data with none.)

Answers come in the order the flushes were asked for, per torrent. libtorrent also
flushes by itself when a torrent finishes and posts the same alert (the session's alert
mask has the storage category); that extra answer may release a later request early,
which is still right: that flush ran after every piece was in, and no request made after
it can name a piece it did not cover. An answer lost (a full alert queue) only delays: the
caller asks again, and the answer to the later request releases the earlier one, whose
pieces that later flush covered too. An answer from a torrent's earlier handle (dropped
and added again) is ignored.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import libtorrent as lt

from vmic.log import event

log = logging.getLogger("vmic.swarm")


#: states in which a torrent has downloaded nothing since it was added: its pieces are its resume data's
CHECKING = (lt.torrent_status.states.checking_resume_data, lt.torrent_status.states.checking_files)


@dataclass
class Flush:
    handle: lt.torrent_handle
    #: had when the flush was asked for, on disk once ``done``; None while the torrent was
    #: still checking (it has written nothing since it was added: its resume data stands)
    pieces: list[bool] | None
    save: bool  #: then save resume data for those pieces
    done: asyncio.Event = field(default_factory=asyncio.Event)  #: flushed (and saved), or given up


def vouched(params: lt.add_torrent_params, flushed: Sequence[bool] | None) -> lt.add_torrent_params:
    """``params`` (resume data) claiming only the pieces in ``flushed`` and no partial piece
    (as they are, if ``flushed`` is None)."""
    if flushed is None:
        return params
    have = list(params.have_pieces)
    params.have_pieces = [bool(h) and i < len(flushed) and bool(flushed[i]) for i, h in enumerate(have)]
    params.unfinished_pieces = {}
    return params


@dataclass
class DiskFlushes:
    torrent_dir: Path  #: resume data goes to ``<btih>.resume``
    _flushing: dict[str, deque[Flush]] = field(default_factory=dict)  #: by v1 info hash
    _saving: dict[str, deque[Flush]] = field(default_factory=dict)

    def flush(self, info_hash: str, handle: lt.torrent_handle, save: bool = False,
              status: lt.torrent_status | None = None) -> Flush | None:
        """Ask for the torrent's cached blocks to be written (None if the torrent is gone);
        ``status``: the torrent's, if the caller has just read it."""
        if not handle.is_valid():
            return None
        status = status if status is not None else handle.status()
        request = Flush(handle, None if status.state in CHECKING else list(status.pieces), save)
        self._flushing.setdefault(info_hash, deque()).append(request)
        handle.flush_cache()
        return request

    def pending(self) -> list[asyncio.Event]:
        return [r.done for q in (*self._flushing.values(), *self._saving.values()) for r in q]

    def forget(self, info_hash: str) -> None:
        """The torrent left the session: its requests will not be answered."""
        for queues in (self._flushing, self._saving):
            for request in queues.pop(info_hash, ()):
                request.done.set()

    def on_alert(self, alert: lt.alert) -> None:
        if isinstance(alert, lt.cache_flushed_alert):
            request = self._answer(self._flushing, alert)
            if request is None:
                return
            if request.save and request.handle.is_valid() and self._savable(request):
                self._saving.setdefault(str(alert.handle.info_hashes().v1), deque()).append(request)
                request.handle.save_resume_data(0)  # no flush_disk_cache: it would not be waited for
            else:
                request.done.set()
        elif isinstance(alert, lt.save_resume_data_alert):
            request = self._answer(self._saving, alert)
            if request is not None:
                self._write(str(alert.handle.info_hashes().v1), vouched(alert.params, request.pieces))
                request.done.set()
        elif isinstance(alert, lt.save_resume_data_failed_alert):
            request = self._answer(self._saving, alert)
            if request is not None:
                request.done.set()

    @staticmethod
    def _savable(request: Flush) -> bool:
        """Asked while libtorrent checked the torrent and answered once it no longer does:
        pieces may have come since, unwritten, so not saved (the resume data on disk stays
        until the next save)."""
        return request.pieces is not None or request.handle.status().state in CHECKING

    @staticmethod
    def _answer(queues: dict[str, deque[Flush]], alert: lt.torrent_alert) -> Flush | None:
        queue = queues.get(str(alert.handle.info_hashes().v1))
        if not queue or queue[0].handle != alert.handle:
            return None
        return queue.popleft()

    def _write(self, info_hash: str, params: lt.add_torrent_params) -> None:
        path = self.torrent_dir / f"{info_hash}.resume"
        temporary = path.with_suffix(".resume.new")
        try:
            temporary.write_bytes(lt.write_resume_data_buf(params))
            temporary.rename(path)
        except OSError as e:  # a full disk: the last resume data stays, the download goes on
            event(log, "swarm.resume_not_saved", level=logging.WARNING, btih=info_hash, error=str(e))
