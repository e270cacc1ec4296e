"""Announces per second and p99 latency of our tracker, as a ratio to opentracker (Debian),
under the same load in the same run.

    tools/bench/run tracker.py [--seconds 10] [--connections 32]

The load (wrk + announce.lua): announces from ever new peers to 16 torrents, half of
them seeds, compact answers of up to 50 peers. Our tracker runs as its service with
the 16 info hashes allowed (as if its catalogue listed them) and topology off; each
tracker gets CPU 1, wrk CPU 0.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import free_port, pinned, wait_port, write_result  # noqa: E402
from imagelist import wrk  # noqa: E402

OUR_TRACKER = """
import asyncio, sys
from aiohttp import web
from distributor.tracker.server import Tracker, TrackerConfig, make_app
from vmic.catalogue_source import CatalogueSource
# wrk announces every peer from 127.0.0.1: no cap on peers per address (opentracker has none)
tracker = Tracker.from_config(TrackerConfig(CatalogueSource("", "/", ""), listen="127.0.0.1:{port}",
                                            max_peers_per_address=10**9))
tracker.allowlist.hashes = frozenset(bytes((t * 37 + i * 11) % 256 for i in range(1, 21)) for t in range(1, 17))
web.run_app(make_app(tracker, follow=False), host="127.0.0.1", port={port}, access_log=None, print=None)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    if shutil.which("opentracker") is None:
        raise SystemExit("opentracker is not installed (tools/bench/run installs it: apt-get install opentracker)")
    ours_port, theirs_port = free_port(), free_port()
    ours = subprocess.Popen([*pinned(1), sys.executable, "-c", OUR_TRACKER.format(port=ours_port)],
                            cwd=HERE.parents[1])
    # Debian's opentracker answers only the info hashes of its whitelist (others: "not
    # authorized", a cheaper answer than a peer list): the bench's 16 torrents, in a directory it
    # can read once chrooted there as nobody
    jail = Path(tempfile.mkdtemp(prefix="vmic-opentracker-"))
    jail.chmod(0o755)
    (jail / "whitelist").write_text("".join(bytes((t * 37 + i * 11) % 256 for i in range(1, 21)).hex() + "\n"
                                            for t in range(1, 17)))
    (jail / "whitelist").chmod(0o644)
    theirs = subprocess.Popen([*pinned(1), "opentracker", "-i", "127.0.0.1", "-p", str(theirs_port),
                               "-P", str(theirs_port), "-d", str(jail), "-w", "whitelist"], cwd=jail,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(ours_port, ours)
        wait_port(theirs_port, theirs)
        script = str(HERE / "announce.lua")
        results = {}
        for name, port in (("ours", ours_port), ("opentracker", theirs_port)):
            wrk(f"http://127.0.0.1:{port}/announce", 2, args.connections, script)  # warm up
            results[name] = wrk(f"http://127.0.0.1:{port}/announce", args.seconds, args.connections, script)
        rps_ratio = results["ours"]["rps"] / results["opentracker"]["rps"]
        p99_ratio = results["ours"]["p99_ms"] / results["opentracker"]["p99_ms"]
        print(f"opentracker : {results['opentracker']['rps']:9.0f} announces/s  p99 {results['opentracker']['p99_ms']:.2f} ms")
        print(f"our tracker : {results['ours']['rps']:9.0f} announces/s  p99 {results['ours']['p99_ms']:.2f} ms")
        print(f"ratios ours/opentracker: announces/s {rps_ratio:.2f}, p99 latency {p99_ratio:.2f}")
        write_result("tracker", {"connections": args.connections, "seconds": args.seconds, **results,
                                 "rps_ratio": rps_ratio, "p99_ratio": p99_ratio})
    finally:
        for proc in (ours, theirs):
            proc.terminate()
            proc.wait(10)
        shutil.rmtree(jail, ignore_errors=True)


if __name__ == "__main__":
    main()
