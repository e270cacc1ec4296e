"""The stock column of the swarm benchmark: the same image to the same hosts with stock
BitTorrent (libtorrent's defaults, a plain seeder, opentracker), right after ours.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from common import wait_port  # noqa: E402
from lab_services import PY, fetch_all, link_bytes, tx_bytes  # noqa: E402
from netlab import Host, Lab, Rack  # noqa: E402


def stock_swarm(lab: Lab, origin: Host, nodes: list[Host], work: Path, sha512: str, size: int) -> tuple[float, float]:
    """The same image to the same hosts with stock BitTorrent (tools/bench/stock_node.py:
    libtorrent's default settings, a torrent of libtorrent's default piece size, a plain
    seeder on the origin, opentracker); seconds until every node has verified it, and
    origin copies. No web seed: with the catalogue as web seed, stock nodes take the whole
    image from it (measured: N copies from the origin at N = 4, 8, 16, T/T* 3.2 to 9.4)."""
    import libtorrent as lt

    blob = work / "catalogue" / "blobs" / "sha512" / sha512[:2] / sha512
    port = 6970
    made = lt.create_torrent(lt.list_files(str(blob)))  # libtorrent's default piece size, v1 and v2
    made.add_tracker(f"http://{lab.gateway}:{port}/announce")
    lt.set_piece_hashes(made, str(blob.parent))
    torrent_file = work / "stock.torrent"
    torrent_file.write_bytes(lt.bencode(made.generate()))
    hashes = lt.torrent_info(str(torrent_file)).info_hashes()
    # Debian's opentracker serves only the info hashes of its whitelist, which it reads after
    # it chroots (-d) and drops to nobody: a directory of its own, readable by all
    jail = work / "opentracker"
    jail.mkdir(mode=0o755)
    jail.chmod(0o755)
    (jail / "whitelist").write_text(f"{hashes.v1}\n{str(hashes.v2)[:40]}\n")
    (jail / "whitelist").chmod(0o644)
    tracker = subprocess.Popen(["opentracker", "-i", lab.gateway, "-p", str(port), "-P", str(port), "-d", str(jail),
                                "-w", "whitelist"], cwd=jail, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seeder = None
    try:
        seeder = subprocess.Popen(origin.command(PY, str(HERE / "stock_node.py"), "seed", str(torrent_file),
                                                 str(blob.parent), origin.address), stdout=subprocess.DEVNULL)
        wait_port(port, tracker, host=lab.gateway)
        sent_before = tx_bytes(origin)
        seconds = asyncio.run(fetch_all([
            node.command(PY, str(HERE / "stock_node.py"), "fetch", str(torrent_file), sha512,
                         str(work / "stock" / node.name), node.address) for node in nodes]))
        return seconds, (tx_bytes(origin) - sent_before) / size
    finally:
        for proc in (seeder, tracker):
            if proc is not None:
                proc.terminate()
                proc.wait(15)
        shutil.rmtree(work / "stock", ignore_errors=True)


def stock_beside(lab: Lab, origin: Host, nodes: list[Host], racks: list[Rack], work: Path, sha512: str,
                 size: int) -> tuple[float | None, ...]:
    """The stock column of a run: stock BitTorrent's seconds, origin copies and copies
    across the racks' links, on the hosts ours just used."""
    crossed_before = sum(link_bytes(r.uplink) for r in racks)
    seconds, copies = stock_swarm(lab, origin, nodes, work, sha512, size)
    return seconds, copies, (sum(link_bytes(r.uplink) for r in racks) - crossed_before) / size
