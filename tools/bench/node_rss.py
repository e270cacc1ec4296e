"""Memory of a node daemon that holds and seeds many images: its resident set (RSS) once
every image is staged and in its BitTorrent session, as a ratio to the same daemon
holding nothing (measured in the same run), and against the goal of 150 MB.

    tools/bench/run node_rss.py --images 50 --size-mib 8

A catalogue on loopback publishes the images (each gets a torrent: the catalogue is
its web seed); one ``nodecache run`` follows it, fetches, verifies, stages and seeds
them all. RSS and peak RSS (VmHWM) are read from /proc.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))
from common import CatalogueUnderTest, free_port, workdir, write_result  # noqa: E402

from vmic.client import CatalogueClient  # noqa: E402

DN = "/C=CH/O=vmic demo/CN=vmic catalogue endorser"


def memory(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in bytes."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024


async def status(socket: Path) -> dict:
    import aiohttp

    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(socket))) as session:
        async with session.get("http://node/status") as response:
            return await response.json()


def start_node(work: Path, catalogue: CatalogueUnderTest) -> tuple[subprocess.Popen[bytes], Path]:
    cache = work / "node"
    cache.mkdir(exist_ok=True)
    config = work / "node.toml"
    config.write_text(f'[nodecache]\ncache_dir = "{cache}"\nformat = "raw"\nlisten = "127.0.0.1:{free_port()}"\n'
                      f'log_level = "warning"\nparallel = 4\n[[nodecache.catalogue]]\nurl = "{catalogue.url}"\n'
                      f'ca = "{catalogue.ca_dir}"\nendorser_dn = "{DN}"\n')
    proc = subprocess.Popen([sys.executable, "-m", "nodecache.cli", "-c", str(config), "run"],
                            stderr=open(work / "node.log", "ab"))
    return proc, cache / "nodecache.sock"


def wait_staged(socket: Path, count: int, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            images = asyncio.run(status(socket))["images"]
            if sum(1 for i in images if i["state"] == "staged") >= count:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit("the node did not stage every image in time")


async def publish(url: str, work: Path, count: int, size: int) -> None:
    async with CatalogueClient(url, CatalogueUnderTest.TOKEN) as client:
        for n in range(count):
            path = work / "image.raw"
            data = hashlib.shake_256(str(n).encode()).digest(size)
            path.write_bytes(data)
            await client.upload(path, {"namespace": "bench", "name": f"image{n}", "version": "1", "size": size,
                                       "sha512": hashlib.sha512(data).hexdigest()})
            path.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--size-mib", type=int, default=8)
    args = parser.parse_args()
    work = workdir("vmic-rss-")
    catalogue = CatalogueUnderTest(work)
    node = None
    try:
        node, socket = start_node(work, catalogue)
        while not socket.exists():
            time.sleep(0.1)
        time.sleep(3)
        idle, _ = memory(node.pid)
        asyncio.run(publish(catalogue.url, work, args.images, args.size_mib * 2**20))
        wait_staged(socket, args.images)
        time.sleep(5)  # settled: every torrent seeding
        seeding = len([1 for i in asyncio.run(status(socket))["images"] if i["state"] == "staged"])
        rss, peak = memory(node.pid)
        mb = 1e6
        print(f"node daemon holding nothing: {idle / mb:.0f} MB RSS")
        print(f"holding and seeding {seeding} images of {args.size_mib} MiB: {rss / mb:.0f} MB RSS "
              f"(peak {peak / mb:.0f} MB)")
        print(f"ratio to the idle daemon: {rss / idle:.2f}; to the goal of 150 MB: {rss / 150e6:.2f}")
        write_result("node_rss", {"images": seeding, "image_bytes": args.size_mib * 2**20, "idle_rss": idle,
                                  "rss": rss, "peak_rss": peak, "ratio_to_idle": rss / idle,
                                  "ratio_to_goal_150MB": rss / 150e6})
    finally:
        if node is not None:
            node.terminate()
            node.wait(30)
        catalogue.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
