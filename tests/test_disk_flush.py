"""Resume data vouches only for pieces known to be written (vmic.fetch.disk_flush)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import libtorrent as lt
import pytest

from vmic.fetch.disk_flush import vouched


@pytest.mark.parametrize("have, flushed, expected", [
    ([True, True, True], [True, True, True], [True, True, True]),
    ([True, True, True], [True, False, True], [True, False, True]),  # passed its hash, not yet written
    ([False, True, False], [True, True, True], [False, True, False]),  # a flush does not invent pieces
    ([True, True], [True], [True, False]),  # the flush knew fewer pieces: only those count
    ([True, True], [], [False, False]),
])
def test_resume_data_claims_only_the_flushed_pieces(have: list[bool], flushed: list[bool],
                                                    expected: list[bool]) -> None:
    params = lt.add_torrent_params()
    params.have_pieces = have
    params.unfinished_pieces = {1: [True, False]}  # blocks that may still be in libtorrent's cache
    result = lt.read_resume_data(lt.write_resume_data_buf(vouched(params, flushed)))
    assert list(result.have_pieces)[:len(expected)] == expected
    assert not any(list(result.have_pieces)[len(expected):])
    assert result.unfinished_pieces == {}


def test_resume_data_of_a_torrent_still_checking_stands() -> None:
    """Flushed while libtorrent still checked it: nothing was written since it was added."""
    params = lt.add_torrent_params()
    params.have_pieces = [True, False, True]
    assert list(vouched(params, None).have_pieces) == [True, False, True]


async def test_a_restart_stopped_at_once_keeps_the_pieces_its_resume_data_named(catalogue: Any,
                                                                                tmp_path: Path) -> None:
    """A complete download, saved; the daemon starts again and stops at once, perhaps before
    libtorrent has checked that resume data (its status then shows no piece): the resume
    data saved still names every piece."""
    from support import free_port, have_pieces, publish_and_wait, write_image

    from vmic.fetch.swarm import Swarm

    record, torrent = await publish_and_wait(catalogue, write_image(tmp_path / "a.raw", 2**20))
    image = catalogue.catalogue.listing.current.image_list.image(record["identifier"])
    resume = tmp_path / "torrents" / f"{torrent.btih}.resume"

    def swarm() -> Swarm:
        return Swarm(tmp_path / "data", tmp_path / "torrents", f"127.0.0.1:{free_port()}")

    first = swarm()
    await first.start()
    try:
        await asyncio.wait_for(first.fetch(image, torrent, lambda n: None), 60)
    finally:
        await first.close()
    pieces = torrent.info.num_pieces()
    assert have_pieces(resume) == pieces
    for _ in range(3):
        again = swarm()
        await again.start()
        again.seed(image, torrent)  # from its resume data
        await again.close()
        assert have_pieces(resume) == pieces
