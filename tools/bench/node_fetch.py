"""One node of the swarm benchmark: fetch an image by its torrent (or by plain HTTP), check
it whole against the sha512 of the signed list, print one JSON line. Stands in for the node
daemon until it exists.

    python node_fetch.py torrent TORRENT_URL SHA512 OUT_DIR LISTEN_ADDRESS
    python node_fetch.py http IMAGE_URL SHA512 OUT_DIR

A torrent node goes on seeding after it has the image (as a node daemon does) until it is
terminated; the benchmark stops all nodes once every one has reported.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def sha512_file(path: Path) -> str:
    digest = hashlib.sha512()
    with open(path, "rb") as handle:
        while block := handle.read(4 * 2**20):
            digest.update(block)
    return digest.hexdigest()


def fetch_torrent(url: str, out: Path, listen: str) -> tuple[object, Path]:
    import libtorrent as lt

    from vmic.bittorrent.session import make_session
    from vmic.preheat import USER_AGENT_PREFIX

    data = urllib.request.urlopen(url).read()
    if os.environ.get("VMIC_NODE_NO_WEB_SEED"):  # peers only (the info dict, and so the hash, unchanged)
        metainfo = lt.bdecode(data)
        metainfo.pop(b"url-list", None)
        data = lt.bencode(metainfo)
    name = f"bench-{listen}"
    session = make_session(f"{listen}:6881", user_agent=USER_AGENT_PREFIX + name)
    asyncio.run(until_seeding(session, data, out, name))
    print(json.dumps({"done": time.monotonic()}), flush=True)
    return session, out / lt.torrent_info(data).name()


async def until_seeding(session: object, data: bytes, out: Path, name: str) -> None:
    """As the node daemon does (vmic.fetch.swarm): take the origin share, unless
    VMIC_NODE_NO_SHARES is set (then plain BitTorrent)."""
    import aiohttp
    import libtorrent as lt

    from vmic.bittorrent.tracker_api import share_url
    from vmic.fetch.shares import OriginShares
    from vmic.fetch.swarm import TICK_SECONDS  # the node daemon's step
    from vmic.torrents import Torrent

    torrent = Torrent.parse(data)
    url = None if os.environ.get("VMIC_NODE_NO_SHARES") else share_url(torrent.trackers, torrent.btih, name)
    shares = OriginShares(torrent.btih, url, torrent.web_seeds)
    async with aiohttp.ClientSession() as http:
        params = lt.add_torrent_params()
        params.ti = torrent.info
        params.save_path = str(out)
        first = await shares.first(http, torrent.info.num_pieces())
        if first:
            params.piece_priorities = first
        handle = shares.handle = session.add_torrent(params)  # type: ignore[attr-defined]  # a slot the bench adds to the shares object
        last_step = time.monotonic()
        while not handle.status().is_seeding:
            await asyncio.sleep(0.05)
            if time.monotonic() - last_step >= TICK_SECONDS:
                seconds, last_step = time.monotonic() - last_step, time.monotonic()
                await shares.step(http, list(handle.status().pieces), seconds)


def fetch_http(url: str, out: Path) -> Path:
    target = out / "image"
    with urllib.request.urlopen(url) as response, open(target, "wb") as handle:
        while block := response.read(4 * 2**20):
            handle.write(block)
    print(json.dumps({"done": time.monotonic()}), flush=True)
    return target


def main() -> None:
    mode, url, sha512, out = sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4])
    out.mkdir(parents=True, exist_ok=True)
    if mode == "torrent":
        session, target = fetch_torrent(url, out, sys.argv[5])
    else:
        session, target = None, fetch_http(url, out)
    ok = sha512_file(target) == sha512
    print(json.dumps({"verified": ok}), flush=True)
    while session is not None and ok:  # keep seeding for the others until terminated
        time.sleep(1)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
