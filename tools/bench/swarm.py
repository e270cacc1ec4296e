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
import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from common import CatalogueUnderTest, wait_port, write_result  # noqa: E402
from netlab import Host, Lab, Rack  # noqa: E402

from vmic.client import CatalogueClient  # noqa: E402

PY = sys.executable


def rate_bytes(rate: str) -> float:
    """tc rate ("100mbit", "1gbit") in bytes per second."""
    match = re.fullmatch(r"([\d.]+)([kmg]?)bit", rate.lower())
    if match is None:
        raise SystemExit(f"swarm.py: a rate is like 100mbit or 1gbit, not {rate!r}")
    number, unit = match.groups()
    return float(number) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[unit] / 8


def link_bytes(device: str) -> int:
    """Bytes through a root-namespace device, both ways."""
    stats = Path("/sys/class/net") / device / "statistics"
    return int((stats / "tx_bytes").read_text()) + int((stats / "rx_bytes").read_text())


def tx_bytes(host: Host) -> int:
    out = subprocess.run(host.command("cat", "/proc/net/dev"), capture_output=True, text=True, check=True).stdout
    return sum(int(line.split(":")[1].split()[8]) for line in out.splitlines()[2:] if ":" in line
               and not line.strip().startswith("lo:"))


def cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all this machine's CPUs so far (/proc/stat)."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def busy_since(before: tuple[int, int]) -> float:
    """The share of CPU time spent busy since ``before`` (1.0: every core busy throughout)."""
    busy, total = cpu_ticks()
    return (busy - before[0]) / max(1, total - before[1])


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


#: what a node daemon does between its start and "staged", each phase ending at the event
#: its log names (JSON lines, ``ts``): start-up (imports, state, libtorrent session, listening),
#: the first verified list, the planner's decision and the torrent (torrent wait, .torrent
#: fetched and checked), the download (every piece checked), and staging (the whole-image
#: sha512 pass and the hard link of the verified download)
PHASES = (("start-up", "node.listening"), ("list", "node.list_accepted"), ("to fetch", "swarm.fetching"),
          ("download", "node.staging"), ("sha512+stage", "node.staged"))


def phase_split(logs: list[Path], since: float, phases: tuple[tuple[str, str], ...] = PHASES
                ) -> dict[str, tuple[float, float]]:
    """Per phase, the median and the slowest node's seconds, from each daemon's log (events
    from ``since``, a wall-clock time, on)."""
    per_phase: dict[str, list[float]] = {name: [] for name, _ in phases}
    for log in logs:
        seen: dict[str, float] = {}
        for line in log.read_text().splitlines():
            try:
                entry = json.loads(line)
                at = dt.datetime.fromisoformat(entry["ts"]).timestamp()
            except (ValueError, KeyError, TypeError):
                continue
            if at >= since:
                seen.setdefault(entry["event"], at)
        last = since
        for name, ended_by in phases:
            at = seen.get(ended_by)
            if at is None:
                break
            per_phase[name].append(max(0.0, at - last))
            last = at
    return {name: (statistics.median(values), max(values)) for name, values in per_phase.items() if values}


@dataclass
class Daemons:
    """Node daemons (nodecache), one per node host, each with its log and socket."""

    procs: list[asyncio.subprocess.Process]
    sockets: list[Path]
    logs: list[Path]
    spawned: float  #: wall clock


async def start_daemons(nodes: list[Host], work: Path, catalogue_url: str, ca: Path, dn: str,
                        web_seed: bool, formats: list[str] | None = None) -> Daemons:
    """A node daemon per host (``formats``: their base formats in turn; raw by default)."""
    procs, sockets, logs = [], [], []
    spawned = time.time()
    for i, node in enumerate(nodes):
        cache = work / "daemons" / node.name
        cache.mkdir(parents=True)
        config = cache / "node.toml"
        config.write_text(f'[nodecache]\ncache_dir = "{cache}"\nnode_name = "{node.name}"\n'
                          f'format = "{(formats or ["raw"])[i % len(formats or ["raw"])]}"\n'
                          f'listen = "{node.address}:6881"\nweb_seed = {"true" if web_seed else "false"}\n'
                          f'log_level = "info"\n'
                          f'[[nodecache.catalogue]]\nurl = "{catalogue_url}"\nca = "{ca}"\nendorser_dn = "{dn}"\n')
        sockets.append(cache / "nodecache.sock")
        logs.append(cache / "node.log")
        with open(logs[-1], "ab") as out:
            procs.append(await asyncio.create_subprocess_exec(
                *node.command(PY, "-m", "nodecache.cli", "-c", str(config), "run"), stderr=out))
    return Daemons(procs, sockets, logs, spawned)


async def statuses(daemons: Daemons) -> list[dict | None]:
    """Each daemon's /status (None where its socket does not answer yet)."""
    import aiohttp

    found: list[dict | None] = []
    for sock in daemons.sockets:
        try:
            async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(sock))) as session:
                async with session.get("http://node/status") as response:
                    found.append(await response.json())
        except (aiohttp.ClientError, OSError):
            found.append(None)
    if any(p.returncode is not None for p in daemons.procs):
        raise SystemExit("a node daemon stopped: see its node.log")
    return found


async def until_following(daemons: Daemons) -> None:
    """Until every daemon follows the catalogue (a verified list in force)."""
    while not all(s is not None and s["catalogues"][0]["version"] is not None for s in await statuses(daemons)):
        await asyncio.sleep(0.1)


async def until_staged(daemons: Daemons, sha512: str) -> float:
    """Until every daemon has ``sha512`` staged; the monotonic time the last one had it."""
    done: dict[int, float] = {}
    while len(done) < len(daemons.procs):
        for i, status in enumerate(await statuses(daemons)):
            states = {image["sha512"]: image["state"] for image in status["images"]} if status else {}
            if i not in done and states.get(sha512) == "staged":
                done[i] = time.monotonic()
            elif states.get(sha512) == "refused":
                raise SystemExit(f"node daemon {i} refused the image")
        await asyncio.sleep(0.1)
    return max(done.values())


async def stage_all(nodes: list[Host], work: Path, catalogue_url: str, ca: Path, dn: str, sha512: str,
                    web_seed: bool) -> tuple[float, dict[str, tuple[float, float]]]:
    """Start a node daemon (nodecache) on every node host at once; seconds until the last
    one has the image *staged* (followed, fetched, verified against the signed sha512,
    published as a base file), read from each daemon's status over its Unix socket; and
    where that time went (:func:`phase_split`)."""
    start = time.monotonic()
    daemons = await start_daemons(nodes, work, catalogue_url, ca, dn, web_seed)
    try:
        return await until_staged(daemons, sha512) - start, phase_split(daemons.logs, daemons.spawned)
    finally:
        await stop_all(daemons.procs)


#: from an image published to its base staged, each phase ending at the event the node logs
PUBLISH_PHASES = (("list", "node.list_accepted"), ("torrent+to fetch", "swarm.fetching"),
                  ("download", "node.staging"), ("sha512+stage", "node.staged"))


async def publish_to_staged(nodes: list[Host], origin: Host, work: Path, catalogue: CatalogueUnderTest, ca: Path,
                            dn: str, size: int, web_seed: bool
                            ) -> tuple[float, dict[str, tuple[float, float]], float, float, str, str]:
    """Daemons running and following first; then publish: seconds from the image being
    published (the upload's 201) to every node having it staged, where that went, origin
    copies and CPU."""
    daemons = await start_daemons(nodes, work, catalogue.url, ca, dn, web_seed)
    try:
        await until_following(daemons)
        image = work / "image.raw"
        sha512 = write_image(image, size)
        sent_before, cpu_before = tx_bytes(origin), cpu_ticks()
        record = await publish(catalogue.url, image, sha512)
        published, published_wall = time.monotonic(), time.time()
        last = await until_staged(daemons, sha512)
        return (last - published, phase_split(daemons.logs, published_wall, PUBLISH_PHASES),
                (tx_bytes(origin) - sent_before) / size, busy_since(cpu_before), record["identifier"], sha512)
    finally:
        await stop_all(daemons.procs)


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


def keep_logs(work: Path, into: str | None, prefix: str = "") -> None:
    """Copy the node daemons' logs and the services' log of a run into the directory ``into``."""
    if not into:
        return
    Path(into).mkdir(parents=True, exist_ok=True)
    for log in [*work.glob("daemons/*/node.log"), work / "services.log"]:
        if log.is_file():
            shutil.copy(log, Path(into) / f"{prefix}{log.parent.name if log.name == 'node.log' else 'services'}.log")


#: the seeder's metrics port on the origin (write_distributor_config)
SEEDER_METRICS = 9466


def seeder_sent(origin: Host) -> int:
    """Payload bytes the seeder on ``origin`` has uploaded so far (its metrics)."""
    import urllib.request

    with urllib.request.urlopen(f"http://{origin.address}:{SEEDER_METRICS}/metrics", timeout=10) as response:
        found = re.search(r"^vmic_seeder_uploaded_bytes_total (\S+)$", response.read().decode(), re.M)
    return int(float(found.group(1))) if found else 0


def stock_beside(lab: Lab, origin: Host, nodes: list[Host], racks: list[Rack], work: Path, sha512: str,
                 size: int) -> tuple[float | None, ...]:
    """The stock column of a run: stock BitTorrent's seconds, origin copies and copies
    across the racks' links, on the hosts ours just used."""
    crossed_before = sum(link_bytes(r.uplink) for r in racks)
    seconds, copies = stock_swarm(lab, origin, nodes, work, sha512, size)
    return seconds, copies, (sum(link_bytes(r.uplink) for r in racks) - crossed_before) / size


async def stop_all(procs: list[asyncio.subprocess.Process]) -> None:
    for proc in procs:
        if proc.returncode is None:
            proc.terminate()
    for proc in procs:
        await proc.wait()


async def fetch_all(commands: list[list[str]]) -> float:
    """Start every node at once; seconds until the last one has verified its image."""
    start = time.monotonic()
    procs = [await asyncio.create_subprocess_exec(*c, stdout=asyncio.subprocess.PIPE,
                                                  stderr=asyncio.subprocess.DEVNULL) for c in commands]
    finished = []
    try:
        for proc in procs:
            assert proc.stdout is not None
            verified = False
            while not verified:
                line = await asyncio.wait_for(proc.stdout.readline(), 3600)
                if not line:
                    raise SystemExit("a node stopped before it had the image")
                report = json.loads(line)
                if "verified" in report:
                    if not report["verified"]:
                        raise SystemExit("a node's image did not match the sha512 of the list")
                    verified = True
                else:
                    finished.append(report["done"])
    finally:
        await stop_all(procs)
    return max(finished) - start


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


#: the endorser of the demo keys the benchmark's catalogue makes (vmic/pki.py)
DEMO_DN = "/C=CH/O=vmic demo/CN=vmic catalogue endorser"


def write_distributor_config(work: Path, tracker: str, catalogue: CatalogueUnderTest, origin: Host,
                             topology: str = "", super_seed: bool = True, seeder_limit: int = 0) -> Path:
    """``work/distributor.toml``: the tracker on ``tracker``, the seeder on the origin
    seeding the catalogue's blob store, both following the catalogue."""
    keys, dn = catalogue.keys, DEMO_DN
    path = work / "distributor.toml"
    path.write_text(
        f'[tracker]\nlisten = "{tracker}"\ninterval = 10\nmin_interval = 1\n'
        f'log_level = "warning"\n[tracker.catalogue]\nurl = "{catalogue.url}"\nca = "{keys.ca_dir}"\n'
        f'endorser_dn = "{dn}"\n[tracker.topology]\n{topology}'
        f'[seeder.catalogue]\nurl = "{catalogue.url}"\nca = "{keys.ca_dir}"\nendorser_dn = "{dn}"\n'
        f'[seeder]\nblob_dir = "{work / "catalogue" / "blobs" / "sha512"}"\n'
        f'state_dir = "{work / "seeder"}"\nlisten = "{origin.address}:6881"\nlog_level = "warning"\n'
        f'super_seed = {"true" if super_seed else "false"}\nupload_limit = {seeder_limit}\n'
        f'metrics_listen = "{origin.address}:{SEEDER_METRICS}"\n')
    return path


@contextlib.contextmanager
def services_running(work: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """The lab's services (catalogue, tracker, seeder) as they are started: the tail of
    their log if the run fails, all stopped at the end."""
    services: list[subprocess.Popen[bytes]] = []
    try:
        yield services
    except BaseException:
        print((work / "services.log").read_text()[-3000:], file=sys.stderr)
        raise
    finally:
        for service in services:
            service.terminate()
        for service in services:
            service.wait(15)


def write_image(path: Path, size: int) -> str:
    """Random data (every 4 MiB block distinct): the image of a run; its sha512."""
    with open(path, "wb") as out:
        block = os.urandom(4 * 2**20)
        for i in range(size // len(block)):
            out.write(block[i % 13:] + block[: i % 13])
    return hashlib.sha512(path.read_bytes()).hexdigest()


async def publish(url: str, image: Path, sha512: str) -> dict:
    async with CatalogueClient(url, CatalogueUnderTest.TOKEN) as client:
        return await client.upload(image, {"namespace": "bench", "name": "swarm", "version": "1",
                                           "size": image.stat().st_size, "sha512": sha512})


def wait_tracker(tracker: str, port: int, torrent_url: str, seeds: int, timeout: float = 60) -> None:
    """Until the tracker serves the torrent (it follows the catalogue) with ``seeds`` complete peers."""
    import urllib.parse
    import urllib.request

    import libtorrent as lt

    info_hash = bytes.fromhex(str(lt.torrent_info(urllib.request.urlopen(torrent_url).read()).info_hashes().v1))
    url = f"http://{tracker}:{port}/scrape?info_hash={urllib.parse.quote_from_bytes(info_hash)}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        files = lt.bdecode(urllib.request.urlopen(url).read()).get(b"files", {})
        if info_hash in files and files[info_hash][b"complete"] >= seeds:
            return
        time.sleep(0.2)
    raise SystemExit(f"the tracker never had the torrent with {seeds} seed(s)")


def wait_url(url: str, timeout: float = 120) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url).read()
            return
        except urllib.error.URLError:
            time.sleep(0.2)
    raise SystemExit(f"{url} never appeared")


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
