"""Stock BitTorrent for the swarm benchmark's stock column: plain libtorrent with its
default settings (only DHT, local peer discovery, UPnP and NAT-PMP off: the lab's hosts
must not look outside it), no origin shares, no super-seeding, announcing to opentracker.

    python stock_node.py seed  TORRENT_FILE SAVE_DIR LISTEN_ADDRESS         # the origin's seeder
    python stock_node.py fetch TORRENT_FILE SHA512 OUT_DIR LISTEN_ADDRESS   # a node

A node prints {"done": <monotonic>} when it has every piece and {"verified": ok} after the
whole-file sha512 (what tools/bench/swarm.py's fetch_all reads), then seeds until stopped.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

import libtorrent as lt


def session(listen: str) -> lt.session:
    return lt.session({"listen_interfaces": f"{listen}:6881", "enable_dht": False, "enable_lsd": False,
                       "enable_upnp": False, "enable_natpmp": False})


def main() -> None:
    mode, torrent_file = sys.argv[1], Path(sys.argv[2])
    info = lt.torrent_info(str(torrent_file))
    params = lt.add_torrent_params()
    params.ti = info
    if mode == "seed":
        save, listen = Path(sys.argv[3]), sys.argv[4]
        params.save_path = str(save)
        params.flags |= lt.torrent_flags.seed_mode  # the catalogue checked these bytes
        ses = session(listen)
        ses.add_torrent(params)
        print(json.dumps({"seeding": True}), flush=True)
        while True:
            time.sleep(1)
    sha512, out, listen = sys.argv[3], Path(sys.argv[4]), sys.argv[5]
    out.mkdir(parents=True, exist_ok=True)
    params.save_path = str(out)
    ses = session(listen)
    handle = ses.add_torrent(params)
    while not handle.status().is_seeding:
        time.sleep(0.05)
    print(json.dumps({"done": time.monotonic()}), flush=True)
    digest = hashlib.sha512()
    with open(out / info.files().file_path(0), "rb") as source:
        while block := source.read(4 * 2**20):
            digest.update(block)
    ok = digest.hexdigest() == sha512
    print(json.dumps({"verified": ok}), flush=True)
    while ok:  # seed for the others until terminated
        time.sleep(1)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
