"""Resume data vouches only for pieces known to be written (vmic.fetch.disk_flush)."""

from __future__ import annotations

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
