"""The swarm benchmark: N node hosts fetch one image through the real catalogue (web seed),
seeder and tracker, in network namespaces shaped with tc; then, the same N hosts fetch it
by plain HTTP from the catalogue at once (unicast), in the same run.

    tools/bench/run swarm.py --nodes 4,8,16 --size-mib 256 --node-up 100mbit --node-down 1gbit --origin-up 200mbit

Hosts: *origin* (the catalogue and the seeder; upload u_s), *nodes* (upload u, download
d each), the tracker on the lab's bridge. Printed per N:

- T: from the start until every node holds the verified image (whole-image sha512);
- T* = max(S/u_s, S/d, N*S/(u_s + N*u)): no schedule can be faster;
- T/T*; the unicast time and unicast/T; how many copies of the image the origin sent;
- CPU busy: every host shares this machine's CPUs; near 100 %, T measures them, not the links
  (then halve every rate: the same N at half the speed needs half the CPU per second).

Each node is tools/bench/node_fetch.py (libtorrent with the shared session settings; T
ends when each has the verified file), or with ``--daemons`` a real node daemon
(``nodecache run``: it follows the catalogue, fetches, verifies and stages; T ends when
each reports the image staged). With ``--stock``, right after ours and on the same hosts and
shaping, stock BitTorrent fetches the same image (tools/bench/stock_node.py: libtorrent's
default settings, opentracker, a plain seeder) and the run prints ours/stock. Needs root
(namespaces, tc).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from common import CatalogueUnderTest, wait_port, write_result  # noqa: E402
from lab_services import (  # noqa: E402
    DEMO_DN,
    PY,
    SEEDER_METRICS,
    busy_since,
    cpu_ticks,
    fetch_all,
    link_bytes,
    publish,
    rate_bytes,
    seeder_sent,
    services_running,
    tx_bytes,
    wait_tracker,
    wait_url,
    write_distributor_config,
    write_image,
)
from netlab import Lab  # noqa: E402
from node_daemons import keep_logs, publish_to_staged, stage_all  # noqa: E402
from stock_swarm import stock_beside  # noqa: E402


@dataclass
class Run:
    nodes: int
    size: int
    swarm_seconds: float
    bound_seconds: float
    unicast_seconds: float | None
    origin_copies: float
    #: image copies that crossed the links between racks (0 without racks)
    cross_rack_copies: float = 0.0
    #: the machine's CPUs busy during the swarm phase (all hosts share them): near 1.0, the
    #: run measured this machine's CPU rather than the links
    cpu_busy: float = 0.0
    #: daemons only: per phase (PHASES), the median and the slowest node's seconds
    phases: dict[str, tuple[float, float]] | None = None
    #: --stock: stock libtorrent (default settings) + opentracker on the same hosts, same run
    stock_seconds: float | None = None
    stock_copies: float | None = None
    stock_cross_rack_copies: float | None = None
    #: of origin_copies, the seeder's (its payload bytes, from its metrics); the rest is the web seed's
    seeder_copies: float | None = None

    @property
    def ratio(self) -> float:
        return self.swarm_seconds / self.bound_seconds


def run_one(n: int, size: int, args: argparse.Namespace, work: Path) -> Run:
    with Lab() as lab:
        racks = [lab.add_rack(args.uplink) for _ in range(args.racks)]
        origin = lab.add_host(upload=args.origin_up, rack=racks[0] if racks else None)
        nodes = [lab.add_host(upload=args.node_up, download=args.node_down,
                              rack=racks[(i + 1) % len(racks)] if racks else None) for i in range(n)]
        topology = "".join(f'"lab/{r.name}" = ["{r.subnet}"]\n' for r in racks) if args.topology else ""
        tracker_port = 6969
        logs = open(work / "services.log", "ab")
        with services_running(work) as services:
            catalogue = CatalogueUnderTest(work, host=origin.address, port=8470, prefix=origin.command(),
                                           extra=f'trackers = "http://{lab.gateway}:{tracker_port}/announce"\n',
                                           log=logs)
            services.append(catalogue.proc)
            keys = catalogue.keys
            dn = DEMO_DN
            write_distributor_config(work, f"{lab.gateway}:{tracker_port}", catalogue, origin, topology,
                                     super_seed=not args.no_super_seed,
                                     seeder_limit=round(rate_bytes(args.seeder_limit)) if args.seeder_limit else 0)
            services.append(subprocess.Popen([PY, "-m", "distributor.cli", "tracker", "-c",
                                              str(work / "distributor.toml")], stderr=logs))
            wait_port(tracker_port, services[-1], host=lab.gateway)
            if args.from_publish:  # daemons and seeder running and following before the image exists
                services.append(subprocess.Popen(origin.command(PY, "-m", "distributor.cli", "seeder", "-c",
                                                                str(work / "distributor.toml")), stderr=logs))
                wait_port(SEEDER_METRICS, services[-1], host=origin.address)
                seeded_before = seeder_sent(origin)
                swarm, phases, copies, cpu_busy, _, sha512 = asyncio.run(publish_to_staged(
                    nodes, origin, work, catalogue, keys.ca_dir, dn, size, not args.no_web_seed))
                seeded = (seeder_sent(origin) - seeded_before) / size
                keep_logs(work, args.keep_logs, f"n{n}-")
                shutil.rmtree(work / "daemons", ignore_errors=True)  # room for stock's copies
                stock = stock_beside(lab, origin, nodes, racks, work, sha512, size) if args.stock else (None,) * 3
                u_s, u, d = rate_bytes(args.origin_up), rate_bytes(args.node_up), rate_bytes(args.node_down)
                bound = max(size / u_s, size / d, n * size / (u_s + n * u))
                return Run(n, size, swarm, bound, None, copies, 0.0, cpu_busy, phases, *stock, seeder_copies=seeded)
            image = work / "image.raw"
            sha512 = write_image(image, size)
            record = asyncio.run(publish(catalogue.url, image, sha512))
            torrent_url = f"{catalogue.url}/images/{record['identifier']}.torrent"
            wait_url(torrent_url)
            wait_tracker(lab.gateway, tracker_port, torrent_url, seeds=0)
            services.append(subprocess.Popen(origin.command(PY, "-m", "distributor.cli", "seeder", "-c",
                                                            str(work / "distributor.toml")), stderr=logs))
            wait_tracker(lab.gateway, tracker_port, torrent_url, seeds=1)
            sent_before, seeded_before = tx_bytes(origin), seeder_sent(origin)
            crossed_before = sum(link_bytes(r.uplink) for r in racks)
            cpu_before = cpu_ticks()
            phases = None
            if args.daemons:
                swarm, phases = asyncio.run(stage_all(nodes, work, catalogue.url, keys.ca_dir, dn, sha512,
                                                      not args.no_web_seed))
            else:
                swarm = asyncio.run(fetch_all([
                    node.command(PY, str(HERE / "node_fetch.py"), "torrent", torrent_url, sha512,
                                 str(work / "nodes" / node.name), node.address) for node in nodes]))
            cpu_busy = busy_since(cpu_before)
            copies = (tx_bytes(origin) - sent_before) / size
            seeded = (seeder_sent(origin) - seeded_before) / size
            cross_rack = (sum(link_bytes(r.uplink) for r in racks) - crossed_before) / size
            keep_logs(work, args.keep_logs, f"n{n}-")
            shutil.rmtree(work / "nodes", ignore_errors=True)
            shutil.rmtree(work / "daemons", ignore_errors=True)
            stock = stock_beside(lab, origin, nodes, racks, work, sha512, size) if args.stock else (None,) * 3
            unicast = None
            if not args.no_unicast:
                image_url = f"{catalogue.url}/images/{record['identifier']}"
                unicast = asyncio.run(fetch_all([
                    node.command(PY, str(HERE / "node_fetch.py"), "http", image_url, sha512,
                                 str(work / "http" / node.name)) for node in nodes]))
                shutil.rmtree(work / "http", ignore_errors=True)
    u_s, u, d = rate_bytes(args.origin_up), rate_bytes(args.node_up), rate_bytes(args.node_down)
    bound = max(size / u_s, size / d, n * size / (u_s + n * u))
    return Run(n, size, swarm, bound, unicast, copies, cross_rack, cpu_busy, phases, *stock, seeder_copies=seeded)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", default="4,8,16")
    parser.add_argument("--size-mib", default="256")
    parser.add_argument("--node-up", default="100mbit")
    parser.add_argument("--node-down", default="1gbit")
    parser.add_argument("--origin-up", default="200mbit")
    parser.add_argument("--no-unicast", action="store_true")
    parser.add_argument("--no-web-seed", action="store_true", help="nodes fetch from peers only")
    parser.add_argument("--no-super-seed", action="store_true", help="the seeder does not super-seed")
    parser.add_argument("--seeder-limit", help="the seeder's upload_limit, as a rate (e.g. 10mbit; default: none)")
    parser.add_argument("--daemons", action="store_true",
                        help="real node daemons (nodecache): T ends when every node has the image *staged*")
    parser.add_argument("--from-publish", action="store_true",
                        help="with --daemons: daemons and seeder run and follow first; T runs from the image "
                             "published to every node having it staged")
    parser.add_argument("--stock", action="store_true",
                        help="then stock libtorrent (default settings) + opentracker on the same hosts and "
                             "shaping, and the ratio ours/stock")
    parser.add_argument("--racks", type=int, default=0, help="put the hosts in this many racks (2 or 3)")
    parser.add_argument("--uplink", default="100mbit", help="each rack's link to the others")
    parser.add_argument("--topology", action="store_true", help="give the tracker the racks' subnets")
    parser.add_argument("--result", default="swarm", help="name of the JSON result (default: swarm)")
    parser.add_argument("--keep-logs", metavar="DIR", help="copy the node daemons' and services' logs here")
    args = parser.parse_args()
    args.daemons = args.daemons or args.from_publish
    if args.no_web_seed:
        os.environ["VMIC_NODE_NO_WEB_SEED"] = "1"  # inherited by every node (tools/bench/node_fetch.py)
    runs = []
    racks = f" racks={args.racks} uplink={args.uplink} topology={'on' if args.topology else 'off'}" if args.racks else ""
    print(f"u_s={args.origin_up} u={args.node_up} d={args.node_down}{racks}")
    print(f"{'N':>3} {'S MiB':>6} {'T s':>7} {'T* s':>7} {'T/T*':>6} {'unicast s':>10} {'unicast/T':>10} "
          f"{'origin copies':>14} {'cross-rack copies':>18} {'CPU busy':>9}")
    for size_mib in (int(s) for s in args.size_mib.split(",")):
        for n in (int(x) for x in args.nodes.split(",")):
            with tempfile.TemporaryDirectory(prefix="vmic-swarm-", dir=os.environ.get("VMIC_BENCH_DIR")) as tmp:
                run = run_one(n, size_mib * 2**20, args, Path(tmp))
            runs.append(run)
            unicast = f"{run.unicast_seconds:10.1f} {run.unicast_seconds / run.swarm_seconds:10.2f}" \
                if run.unicast_seconds else f"{'-':>10} {'-':>10}"
            print(f"{n:>3} {size_mib:>6} {run.swarm_seconds:7.1f} {run.bound_seconds:7.1f} {run.ratio:6.2f} "
                  f"{unicast} {run.origin_copies:14.2f} {run.cross_rack_copies:18.2f} {run.cpu_busy:9.0%}", flush=True)
            if run.seeder_copies is not None:
                print(f"      of the origin's copies, the seeder sent {run.seeder_copies:.2f}, the web seed the rest",
                      flush=True)
            if run.stock_seconds is not None and run.stock_copies is not None:
                print(f"      stock libtorrent + opentracker, same hosts: T {run.stock_seconds:.1f} s, T/T* "
                      f"{run.stock_seconds / run.bound_seconds:.2f}, origin copies {run.stock_copies:.2f}; "
                      f"ours/stock {run.swarm_seconds / run.stock_seconds:.2f}"
                      + (f", cross-rack copies {run.stock_cross_rack_copies:.2f}" if args.racks else ""), flush=True)
            if run.phases:
                print("      where the time went (median / slowest node, s): " + ", ".join(
                    f"{name} {median:.1f} / {slowest:.1f}" for name, (median, slowest) in run.phases.items()), flush=True)
    write_result(args.result, {
        "nodes_are": ("nodecache daemons, running before the publish (published -> staged)" if args.from_publish
                      else "nodecache daemons (staged)" if args.daemons else "tools/bench/node_fetch.py (verified file)"),
        "origin_up": args.origin_up, "node_up": args.node_up, "node_down": args.node_down,
        "racks": args.racks, "uplink": args.uplink if args.racks else None, "topology": args.topology,
        "runs": [{"nodes": r.nodes, "size_bytes": r.size, "swarm_seconds": r.swarm_seconds,
                  "bound_seconds": r.bound_seconds, "ratio": r.ratio, "unicast_seconds": r.unicast_seconds,
                  "origin_copies": r.origin_copies, "cross_rack_copies": r.cross_rack_copies,
                  "cpu_busy": r.cpu_busy, "phases": r.phases, "stock_seconds": r.stock_seconds,
                  "stock_copies": r.stock_copies, "stock_cross_rack_copies": r.stock_cross_rack_copies,
                  "seeder_copies": r.seeder_copies}
                 for r in runs],
    })


if __name__ == "__main__":
    main()
