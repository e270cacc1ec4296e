"""Sparse images end to end: a golden image that is mostly holes, published and staged on N
node daemons, each hop measured against the image's data bytes and a sha512 pass over
the whole image in the same run.

    tools/bench/run sparse.py --virtual-mib 4096 --data-mib 512 --nodes 4

The image: ``--virtual-mib`` of disk holding ``--data-mib`` of data, laid out as a freshly
installed file system is (``--layout clustered``): the installer's files in a few block
groups of 128 MiB filled to ~95 % in runs of 64 KiB to 8 MiB, ``--scattered`` of the data
as files of 64 KiB to 4 MiB anywhere, a 4 KiB metadata block at the start of every
block group; the rest holes. ``--layout random`` puts all of it in runs anywhere (the
worst case for pieces). Deterministic per ``--seed``.

Hosts as in swarm.py (network namespaces, tc): *origin* runs the catalogue and the
seeder, the tracker is on the bridge, N nodes run ``nodecache`` (half raw bases, half
qcow2), all following before the image exists. Printed:

- publish: ``vmic publish`` on the origin (hashing and sending at once) to its 201, in
  seconds and as a ratio to one sha512 pass over the image (same run, warm cache; the
  publisher and the catalogue share this machine's CPUs, each hashing every byte); bytes
  that crossed the origin's loopback (publisher -> catalogue, TCP/IP headers included)
  per data byte;
- catalogue disk: the blob's allocated bytes per data byte;
- per node: bytes received (all traffic on its link) and disk used (the kept download
  and the base) per data byte, median and largest;
- time to staged: from the 201 to every node having the image staged, against the
  swarm bound for the data bytes plus one sha512 pass (T* for D bytes + sha512), and
  against a dense image of the data bytes through the same daemons right after.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from common import CatalogueUnderTest, sha512_seconds, wait_port, write_result  # noqa: E402
from lab_services import (  # noqa: E402
    DEMO_DN,
    SEEDER_METRICS,
    busy_since,
    cpu_ticks,
    rate_bytes,
    seeder_sent,
    services_running,
    stop_all,
    tx_bytes,
    write_distributor_config,
)
from netlab import Host, Lab  # noqa: E402
from node_daemons import PUBLISH_PHASES, keep_logs, phase_split, start_daemons, until_following, until_staged  # noqa: E402

from vmic.sparse import allocated_bytes, sha512_file  # noqa: E402
from vmic.torrents import piece_size_of  # noqa: E402

PY = sys.executable
KiB, MiB = 2**10, 2**20
GROUP = 128 * MiB


def layout(virtual: int, data: int, scattered: float, kind: str, rng: random.Random) -> list[tuple[int, int]]:
    """The data runs ``(offset, length)`` of an image (see the module's text), sorted."""
    taken: list[tuple[int, int]] = []

    def free(offset: int, length: int) -> bool:
        return offset + length <= virtual and all(offset + length <= a or b <= offset for a, b in taken)

    def scatter(total: int, smallest: int, largest: int) -> None:
        while total > 0:
            length = min(total, 4 * KiB * round(rng.uniform(smallest, largest) / (4 * KiB)) or 4 * KiB)
            offset = rng.randrange(0, virtual - length, 4 * KiB)
            if free(offset, length):
                taken.append((offset, length))
                total -= length

    if kind == "random":
        scatter(data, 64 * KiB, 8 * MiB)
        return sorted(taken)
    metadata = [(g, 4 * KiB) for g in range(0, virtual, GROUP)]
    taken += metadata
    dense = int(data * (1 - scattered)) - sum(n for _, n in metadata)
    group = 0
    while dense > 0:  # fill block groups from the start, ~95 % each, in runs with small gaps
        position, end = group * GROUP + 64 * KiB, (group + 1) * GROUP
        while dense > 0 and position < end:
            length = min(dense, end - position, 4 * KiB * rng.randrange(16, 2048))
            taken.append((position, length))
            dense -= length
            position += length + 4 * KiB * rng.choice((0, 0, 1, 4, 16))
        group += 1
    scatter(data - sum(n for _, n in taken), 64 * KiB, 4 * MiB)
    return sorted(taken)


def write_sparse(path: Path, virtual: int, runs: list[tuple[int, int]]) -> None:
    block = os.urandom(4 * MiB)
    with open(path, "wb") as out:
        out.truncate(virtual)
        for i, (offset, length) in enumerate(runs):
            out.seek(offset)
            while length:
                n = min(length, len(block))
                out.write(block[i % 61:i % 61 + n] if n + 61 <= len(block) else os.urandom(n))
                length -= n


def write_dense(path: Path, size: int) -> None:
    """Random data, every block distinct: the image a dense baseline publishes."""
    block = os.urandom(4 * MiB + 64)
    with open(path, "wb") as out:
        for i in range(-(-size // (4 * MiB))):
            out.write(block[i % 61:i % 61 + min(4 * MiB, size - i * 4 * MiB)])


def lo_bytes(host: Host) -> int:
    """Bytes through the loopback of ``host``'s namespace (one way)."""
    out = subprocess.run(host.command("cat", "/proc/net/dev"), capture_output=True, text=True, check=True).stdout
    line = next(line for line in out.splitlines() if line.strip().startswith("lo:"))
    return int(line.split(":")[1].split()[0])


def received_bytes(host: Host) -> int:
    """Bytes ``host`` received (its veth's root end sent them)."""
    return int((Path("/sys/class/net") / host.veth / "statistics" / "tx_bytes").read_text())


def disk_bytes(*directories: Path) -> int:
    """Allocated bytes of the files under ``directories`` (hard links counted once)."""
    seen, total = set(), 0
    for path in (p for directory in directories for p in directory.rglob("*")):
        if path.is_file() and not path.is_symlink():
            stat = path.stat()
            if stat.st_ino not in seen:
                seen.add(stat.st_ino)
                total += stat.st_blocks * 512
    return total


async def publish(origin: Host, url: str, image: Path, version: str = "1") -> float:
    env = {**os.environ, "VMIC_TOKEN": CatalogueUnderTest.TOKEN}
    start = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *origin.command(PY, "-m", "vmic.cli.main", "publish", str(image), "--url", url, "--namespace", "bench",
                        "--name", "sparse", "--version", version, "--no-progress"), env=env,
        stdout=subprocess.DEVNULL)
    if await proc.wait() != 0:
        raise SystemExit("vmic publish failed")
    return time.monotonic() - start


def run(args: argparse.Namespace, work: Path) -> dict:
    virtual, data = args.virtual_mib * MiB, args.data_mib * MiB
    rng = random.Random(args.seed)
    image = work / "golden.raw"
    write_sparse(image, virtual, layout(virtual, data, args.scattered, args.layout, rng))
    data_bytes = allocated_bytes(image)
    sha512 = sha512_file(image)
    hash_pass = sha512_seconds(image)
    with Lab() as lab:
        origin = lab.add_host(upload=args.origin_up)
        nodes = [lab.add_host(upload=args.node_up, download=args.node_down) for _ in range(args.nodes)]
        logs = open(work / "services.log", "ab")
        with services_running(work) as services:
            catalogue = CatalogueUnderTest(work, host=origin.address, port=8470, prefix=origin.command(),
                                           extra=f'trackers = "http://{lab.gateway}:6969/announce"\n', log=logs)
            services.append(catalogue.proc)
            write_distributor_config(work, f"{lab.gateway}:6969", catalogue, origin)
            services.append(subprocess.Popen([PY, "-m", "distributor.cli", "tracker", "-c",
                                              str(work / "distributor.toml")], stderr=logs))
            wait_port(6969, services[-1], host=lab.gateway)
            services.append(subprocess.Popen(origin.command(PY, "-m", "distributor.cli", "seeder", "-c",
                                                            str(work / "distributor.toml")), stderr=logs))
            wait_port(SEEDER_METRICS, services[-1], host=origin.address)
            return asyncio.run(measure(args, work, lab, origin, nodes, catalogue, image, sha512, data_bytes,
                                       hash_pass))


async def measure(args: argparse.Namespace, work: Path, lab: Lab, origin: Host, nodes: list[Host],
                  catalogue: CatalogueUnderTest, image: Path, sha512: str, data_bytes: int, hash_pass: float) -> dict:
    daemons = await start_daemons(nodes, work, catalogue.url, catalogue.keys.ca_dir, DEMO_DN, True,
                                  formats=["raw", "qcow2"])
    try:
        await until_following(daemons)
        wire_before, received_before = lo_bytes(origin), [received_bytes(n) for n in nodes]
        cpu_before = cpu_ticks()
        sent_before, seeded_before = tx_bytes(origin), seeder_sent(origin)
        publish_seconds = await publish(origin, catalogue.url, image)
        published, published_wall = time.monotonic(), time.time()
        wire = lo_bytes(origin) - wire_before
        staged = await until_staged(daemons, sha512) - published
        origin_sent, seeded = tx_bytes(origin) - sent_before, seeder_sent(origin) - seeded_before
        cpu = busy_since(cpu_before)
        received = [received_bytes(n) - b for n, b in zip(nodes, received_before)]
        phases = phase_split(daemons.logs, published_wall, PUBLISH_PHASES)
        downloads = [disk_bytes(work / "daemons" / n.name / "data") for n in nodes]
        bases = [disk_bytes(work / "daemons" / n.name / "data", work / "daemons" / n.name / "base") - downloaded
                 for n, downloaded in zip(nodes, downloads)]
        # the baseline, same run, same daemons: a dense image of the same data bytes
        dense = work / "dense.raw"
        write_dense(dense, data_bytes)
        dense_sha512 = sha512_file(dense)
        dense_publish = await publish(origin, catalogue.url, dense, "2")
        published = time.monotonic()
        dense_staged = await until_staged(daemons, dense_sha512) - published
    finally:
        await stop_all(daemons.procs)
    blob = work / "catalogue" / "blobs" / "sha512" / sha512[:2] / sha512
    u_s, u, d = rate_bytes(args.origin_up), rate_bytes(args.node_up), rate_bytes(args.node_down)
    n = len(nodes)
    bound = max(data_bytes / u_s, data_bytes / d, n * data_bytes / (u_s + n * u))
    return {"virtual_bytes": image.stat().st_size, "data_bytes": data_bytes, "layout": args.layout,
            "piece_size": piece_size_of(image), "sha512_pass_seconds": hash_pass,
            "publish_seconds": publish_seconds, "publish_wire_bytes": wire,
            "catalogue_disk_bytes": allocated_bytes(blob), "node_received_bytes": received, "origin_sent_bytes": origin_sent,
            "seeder_sent_bytes": seeded,
            "node_download_disk_bytes": downloads,
            "node_base_disk_bytes": bases, "phases": phases, "staged_seconds": staged, "dense_publish_seconds": dense_publish,
            "dense_staged_seconds": dense_staged, "bound_data_seconds": bound, "cpu_busy": cpu,
            "nodes": n}


def report(r: dict) -> None:
    data = r["data_bytes"]
    print(f"image: {r['virtual_bytes'] / MiB:.0f} MiB virtual, {data / MiB:.0f} MiB data ({r['layout']}), "
          f"pieces of {r['piece_size'] // KiB} KiB; one sha512 pass over it: {r['sha512_pass_seconds']:.2f} s")
    print(f"{'':34} {'measured':>12} {'per data byte':>14} {'ratio':>8}")
    print(f"{'publish: bytes publisher->catalogue':34} {r['publish_wire_bytes'] / MiB:9.1f} MiB "
          f"{r['publish_wire_bytes'] / data:14.3f}")
    print(f"{'publish: seconds (vs sha512 pass)':34} {r['publish_seconds']:11.2f}s {'':>14} "
          f"{r['publish_seconds'] / r['sha512_pass_seconds']:8.2f}")
    print(f"{'catalogue disk':34} {r['catalogue_disk_bytes'] / MiB:9.1f} MiB "
          f"{r['catalogue_disk_bytes'] / data:14.3f}")
    received, downloads = r["node_received_bytes"], r["node_download_disk_bytes"]
    print(f"{'node received, median / largest':34} {statistics.median(received) / MiB:9.1f} MiB "
          f"{statistics.median(received) / data:8.3f} / {max(received) / data:.3f}")
    print(f"{'origin sent (copies of the data)':34} {r['origin_sent_bytes'] / MiB:9.1f} MiB "
          f"{r['origin_sent_bytes'] / data:14.3f}")
    print(f"{'  of which the seeder':34} {r['seeder_sent_bytes'] / MiB:9.1f} MiB {r['seeder_sent_bytes'] / data:14.3f}")
    print(f"{'node disk: kept download':34} {statistics.median(downloads) / MiB:9.1f} MiB "
          f"{statistics.median(downloads) / data:8.3f} / {max(downloads) / data:.3f}")
    print(f"{'node disk: base (raw / qcow2)':34} {'':>12} " + " / ".join(
        f"{b / data:.3f}" + (" (the download, linked)" if b == 0 else "") for b in r["node_base_disk_bytes"][:2]))
    limit = r["bound_data_seconds"] + r["sha512_pass_seconds"]
    print(f"{'published -> all staged':34} {r['staged_seconds']:11.2f}s {'':>14} {r['staged_seconds'] / limit:8.2f}"
          f"   (vs T* of the data {r['bound_data_seconds']:.1f} s + one sha512 pass; N = {r['nodes']}, "
          f"CPU busy {r['cpu_busy']:.0%})")
    print(f"{'  same run, dense image of the data':34} {r['dense_staged_seconds']:11.2f}s {'':>14} "
          f"{r['staged_seconds'] / r['dense_staged_seconds']:8.2f}   (sparse / dense of the data bytes; "
          f"its publish {r['dense_publish_seconds']:.2f} s)")
    print("      where the time went (median / slowest node, s): " + ", ".join(
        f"{name} {median:.1f} / {slowest:.1f}" for name, (median, slowest) in r["phases"].items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--virtual-mib", type=int, default=4096)
    parser.add_argument("--data-mib", type=int, default=512)
    parser.add_argument("--layout", choices=("clustered", "random"), default="clustered")
    parser.add_argument("--scattered", type=float, default=0.05, help="clustered: share of data in scattered files")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--node-up", default="100mbit")
    parser.add_argument("--node-down", default="1gbit")
    parser.add_argument("--origin-up", default="200mbit")
    parser.add_argument("--result", default="sparse")
    parser.add_argument("--keep-logs", metavar="DIR", help="copy the daemons' logs here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vmic-sparse-", dir=os.environ.get("VMIC_BENCH_DIR")) as tmp:
        try:
            result = run(args, Path(tmp))
        finally:
            keep_logs(Path(tmp), args.keep_logs)
    report(result)
    write_result(args.result, {**vars(args), **result})


if __name__ == "__main__":
    main()
