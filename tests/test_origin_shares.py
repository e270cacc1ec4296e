"""Origin shares (vmic.bittorrent.share): each downloading node takes its own slice of a new
image from the origin, drops the web seed once that slice is done, and takes it back if its
peers do not suffice. Pure rules table-driven; then the tracker's answer and a real node
daemon over loopback."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from pathlib import Path
from typing import Any
from urllib.parse import quote_from_bytes

import aiohttp
import pytest
from support import logged, node_config, publish_and_wait, running_node, wait_staged, write_image

from vmic.bittorrent.share import (
    OTHER_PRIORITY,
    OWN_PRIORITY,
    STALL_SECONDS,
    Share,
    WebSeedPolicy,
    priorities,
    share_of,
    slice_done,
    slice_of,
)
from vmic.bittorrent.tracker_api import ShareView, share_url
from vmic.errors import BadRequest
from vmic.pki import KeyPaths


@pytest.mark.parametrize("node, swarm, expected", [
    ("hv-b", ["hv-a", "hv-c"], Share(1, 3)),
    ("hv-b", [], Share(0, 1)),  # alone, or before the tracker heard of anyone: the whole image
    ("hv-b", ["hv-b", "hv-a"], Share(1, 2)),  # itself, once it announced, counted once
    ("hv-z", ["hv-a", "hv-a", "hv-b"], Share(2, 3)),
])
def test_a_node_s_share(node: str, swarm: list[str], expected: Share) -> None:
    assert share_of(node, swarm) == expected


@pytest.mark.parametrize("count", [1, 2, 3, 7, 16, 500])
@pytest.mark.parametrize("num_pieces", [1, 5, 2048])
def test_the_slices_cover_every_piece_once(count: int, num_pieces: int) -> None:
    pieces = [p for index in range(count) for p in slice_of(Share(index, count), num_pieces)]
    assert pieces == list(range(num_pieces))


def test_priorities_put_the_own_slice_first() -> None:
    assert priorities(Share(1, 4), 8) == [OTHER_PRIORITY] * 2 + [OWN_PRIORITY] * 2 + [OTHER_PRIORITY] * 4
    assert slice_done(Share(1, 4), [False, False, True, True, False, False, False, False])
    assert not slice_done(Share(0, 4), [False, True] * 4)
    with pytest.raises(ValueError):
        Share(3, 3)


@pytest.mark.parametrize("trackers, expected", [
    (["http://t:6969/announce"], "http://t:6969/swarm/ab/share?node=hv+1"),
    (["udp://t:6969", "https://t/x/announce"], "https://t/x/swarm/ab/share?node=hv+1"),
    (["udp://t:6969/announce", "http://t:6969/announce.php"], None),  # stock trackers: plain BitTorrent
    ([], None),
])
def test_where_a_node_asks(trackers: list[str], expected: str | None) -> None:
    assert share_url(trackers, "ab", "hv 1") == expected


def test_the_web_seed_goes_when_the_share_is_done_and_comes_back_on_a_stall() -> None:
    share = Share(1, 2)  # pieces 2, 3 of 4
    policy = WebSeedPolicy()
    assert policy.step([False] * 4, 1) is True, "no share yet: plain BitTorrent"
    policy.share = share
    assert policy.step([True, False, False, False], 1) is True
    assert policy.step([True, False, True, True], 1) is False, "its slice is done: peers give the rest"
    assert policy.step([True] * 4, 1) is False  # complete: left as it is
    policy = WebSeedPolicy(share=share)
    assert policy.step([False, False, True, True], 1) is False
    steps = [policy.step([False, False, True, True], 1) for _ in range(int(STALL_SECONDS))]
    assert steps[-1] is True and not any(steps[:-1]), "no new piece for STALL_SECONDS: the web seed is back"
    policy.share = Share(0, 2)  # a new share is not taken any more
    assert policy.fell_back and policy.step([True, True, True, False], 1) is True, "and it stays"


async def test_the_tracker_tells_a_node_its_share(site: Any, tmp_path: Path) -> None:
    catalogue, _, announce_url = site
    _, torrent = await publish_and_wait(catalogue, write_image(tmp_path / "a.raw", 2**20), site[1])
    base = announce_url.removesuffix("/announce")
    async with aiohttp.ClientSession() as http:
        for port, name, left in ((7001, "hv-c", 10), (7002, "hv-a", 10), (7003, "hv-done", 0), (7004, "", 10)):
            await ghost(http, announce_url, torrent.btih, port, name, left)
        async with http.get(f"{base}/swarm/{torrent.btih}/share", params={"node": "hv-b"}) as response:
            assert response.status == 200
            # among hv-a, hv-c and hv-done (done nodes keep their places; an unnamed client has none)
            assert await response.json() == {"btih": torrent.btih, "node": "hv-b", "index": 1, "count": 4}
        async with http.get(f"{base}/swarm/{torrent.btih}") as response:  # what peers said of themselves
            view = await response.json()
        assert "unverified" in view["self_reported"]
        assert sorted(p["name"] or "" for p in view["peers"]) == ["", "hv-a", "hv-c", "hv-done"]
        async with http.get(f"{base}/swarm/{'0' * 40}/share", params={"node": "hv-b"}) as response:
            assert response.status == 404 and (await response.json())["error"] == "unknown_torrent"
        async with http.get(f"{base}/swarm/{torrent.btih}/share") as response:
            assert response.status == 400 and (await response.json())["error"] == "bad_request"


async def ghost(http: aiohttp.ClientSession, announce_url: str, btih: str, port: int, name: str, left: int) -> None:
    """A peer that announces (as node daemon ``name``) but never serves anything."""
    query = (f"info_hash={quote_from_bytes(bytes.fromhex(btih))}&peer_id={quote_from_bytes(bytes([port % 256]) * 20)}"
             f"&port={port}&uploaded=0&downloaded=0&left={left}&event=started")
    headers = {"User-Agent": f"vmic-node/{name}"} if name else {}
    async with http.get(f"{announce_url}?{query}", headers=headers) as response:
        assert response.status == 200


async def test_a_node_drops_the_web_seed_for_its_share_and_takes_it_back_on_a_stall(
        site: Any, keys: KeyPaths, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Six nodes download a four-piece image; five of them announce but never serve. hv-0's
    slice is empty (more nodes than pieces), so it drops the web seed at once, makes no
    progress (no seeder, no peer that serves), takes the web seed back and stages the
    image all the same."""
    catalogue, tracker, announce_url = site
    size = 2**20
    record, torrent = await publish_and_wait(catalogue, write_image(tmp_path / "a.raw", size), tracker)
    pieces = torrent.info.num_pieces()
    assert pieces == 4 and not slice_of(Share(0, 6), pieces)
    async with aiohttp.ClientSession() as http:
        for port, name in ((7001, "hv-a"), (7002, "hv-b"), (7003, "hv-c"), (7004, "hv-d"), (7005, "hv-e")):
            await ghost(http, announce_url, torrent.btih, port, name, size)
    config = node_config(tmp_path / "hv-0", catalogue.url, keys, node_name="hv-0", download_limit=128 * 1024)
    caplog.set_level(logging.INFO, logger="nodecache.swarm")
    async with running_node(config) as node:
        await node.refresh()
        await wait_staged(node, record["sha512"], seconds=90)
    switches = logged(caplog, "swarm.web_seed")
    assert [s["on"] for s in switches] == [False, True], switches
    off, on = switches
    assert off["share"] == "0/6" and off["why"] == "share done" and off["pieces"] < pieces
    assert on["why"] == "stalled" and on["pieces"] == off["pieces"], "nothing came while the web seed was off"


async def test_resume_data_saved_without_the_web_seed_does_not_keep_it_off(catalogue: Any, tmp_path: Path) -> None:
    """A node killed while its share had the web seed off restarts with resume data that
    lists no web seed: the torrent's web seed is used again (here the only source)."""
    import libtorrent as lt
    from support import free_port

    from vmic.fetch.swarm import Swarm

    record, torrent = await publish_and_wait(catalogue, write_image(tmp_path / "a.raw", 2**20))
    assert torrent.web_seeds, "the catalogue is the torrent's web seed"
    image = catalogue.catalogue.listing.current.image_list.image(record["identifier"])
    swarm = Swarm(tmp_path / "data", tmp_path / "torrents", f"127.0.0.1:{free_port()}")
    await swarm.start()
    try:
        params = lt.add_torrent_params()
        params.ti = torrent.info
        params.save_path = str(swarm.data_dir)
        params.url_seeds = []
        (swarm.torrent_dir / f"{torrent.btih}.resume").write_bytes(lt.write_resume_data_buf(params))
        path = await asyncio.wait_for(swarm.fetch(image, torrent, lambda n: None), 60)
        assert hashlib.sha512(path.read_bytes()).hexdigest() == record["sha512"]
    finally:
        await swarm.close()


@pytest.mark.parametrize("body, expected", [
    ({"btih": "ab", "node": "hv1", "index": 1, "count": 3}, Share(1, 3)),
    ({"btih": "ab", "node": "hv1", "index": 3, "count": 3}, None),
    ({"btih": "ab", "node": "hv1", "index": -1, "count": 3}, None),
    ({"btih": "ab", "node": "hv1", "index": 0, "count": 10**9}, None),
    ({"btih": "ab", "node": "hv1", "index": "x", "count": 3}, None),
    ({"btih": "ab"}, None),
    ([1, 2], None),
])
def test_the_tracker_s_share_answer_is_checked(body: object, expected: Share | None) -> None:
    if expected is None:
        with pytest.raises((BadRequest, KeyError, ValueError, TypeError)):
            ShareView.from_json(body)
    else:
        assert ShareView.from_json(body).share == expected
        assert ShareView.from_json(ShareView.from_json(body).to_json()).share == expected
