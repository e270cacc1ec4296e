"""What the network benchmarks share: the lab's services (catalogue, tracker, seeder) and
their configuration, publishing an image, waiting for the tracker, and the measures taken
around a run (bytes through a host's links, the seeder's bytes, the CPUs' busy share).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from common import CatalogueUnderTest  # noqa: E402
from netlab import Host  # noqa: E402

from vmic.client import CatalogueClient  # noqa: E402

PY = sys.executable


def rate_bytes(rate: str) -> float:
    """tc rate ("100mbit", "1gbit") in bytes per second."""
    match = re.fullmatch(r"([\d.]+)([kmg]?)bit", rate.lower())
    if match is None:
        raise SystemExit(f"a rate is like 100mbit or 1gbit, not {rate!r}")
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


#: the seeder's metrics port on the origin (write_distributor_config)
SEEDER_METRICS = 9466


def seeder_sent(origin: Host) -> int:
    """Payload bytes the seeder on ``origin`` has uploaded so far (its metrics)."""
    import urllib.request

    with urllib.request.urlopen(f"http://{origin.address}:{SEEDER_METRICS}/metrics", timeout=10) as response:
        found = re.search(r"^vmic_seeder_uploaded_bytes_total (\S+)$", response.read().decode(), re.M)
    return int(float(found.group(1))) if found else 0


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
