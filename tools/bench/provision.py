"""The provisioning shim: VM start time flat in the image size, disk speed of the VM disk
choices, and a create/destroy loop that leaks nothing.

    tools/bench/run provision.py [--disk-gib 2] [--fio-seconds 10] [--rounds 3] [--loops 100]

1. Create time: a node daemon (in this process) holds staged raw bases of 1 GiB and 20 GiB
   (sparse, adopted at start-up from their xattrs, listed by a signed list served here);
   ``POST /vms`` on its socket until the domain is started (qemu-system, TCG), median of
   --rounds. Baseline in the same run: copying the 20 GiB base (``cp --sparse=never``),
   what starting a VM from a copy costs. Goals: <= 0.5 s, flat in size, >= 100x faster.
2. Disk speed, in the seed's spirit (it used iozone -I, averaged over runs): fio through
   qemu's own block layer (qemu-nbd, cache=none, aio=native; fio's nbd engine, no kernel
   NBD needed) on a raw image and on a qcow2 overlay of it; sequential 256 KiB and random
   4 KiB reads and writes, iodepth 16; the overlay's figures as ratios to raw. (An LVM
   snapshot needs device-mapper, which this kernel lacks: not measured here.)
3. --loops VMs created and destroyed (libvirt's test driver, so that the loop measures the
   shim, not qemu's start); afterwards no file, reference or domain may remain.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))
import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402
from common import free_port, workdir, write_result  # noqa: E402

from nodecache.api import make_app  # noqa: E402
from nodecache.config import NodeConfig, ProvisionConfig  # noqa: E402
from nodecache.node import Node  # noqa: E402
from nodecache.storage.files import XATTR  # noqa: E402
from nodecache.wiring import build  # noqa: E402
from vmic.follow import CatalogueSource  # noqa: E402
from vmic.imagelist.extensions import NAME, NAMESPACE  # noqa: E402
from vmic.imagelist.model import Endorser, Image, ImageList  # noqa: E402
from vmic.imagelist.smime import Signer  # noqa: E402
from vmic.pki import init_keys  # noqa: E402

DN = "/C=CH/O=vmic demo/CN=vmic catalogue endorser"


def make_base(base_dir: Path, size: int, name: str) -> Image:
    """A sparse raw base with the xattrs staging writes (a stand-in sha512: nothing here verifies)."""
    sha = hashlib.sha512(f"bench base {name} {size}".encode()).hexdigest()
    path = base_dir / f"{sha}.raw"
    with open(path, "wb") as handle:
        handle.truncate(size)
        handle.seek(0)
        handle.write(os.urandom(2**20))  # a boot sector's worth of data
    identifier = str(uuid.uuid4())
    for key, value in {"identifier": identifier, "version": "1", "sha512": sha, "format": "raw",
                       "list_version": "1", "catalogue": "bench", "staged": str(int(time.time()))}.items():
        os.setxattr(path, XATTR + key, value.encode())
    os.chmod(path, 0o444)
    return Image(identifier=identifier, uri=f"http://bench/{identifier}", size=size, sha512=sha, version="1",
                 title=f"bench/{name}", os="Debian", extra={NAMESPACE: "bench", NAME: name})


async def serve_list(keys: Any, images: list[Image]) -> tuple[web.AppRunner, str]:
    signer = Signer.load(keys.cert, keys.key)
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    signed = signer.sign(ImageList(identifier=str(uuid.uuid4()), version=1, created=now,
                                   expires=now + dt.timedelta(days=1), endorser=Endorser(signer.dn, signer.ca),
                                   images=tuple(images)).to_bytes())
    app = web.Application()
    app.router.add_get("/imagelist", lambda _: web.Response(body=signed))
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


async def post(socket: Path, path: str, body: dict[str, Any] | None = None, method: str = "POST") -> Any:
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(socket))) as session:
        async with session.request(method, f"http://node{path}", json=body) as response:
            lines = [json.loads(line) for line in (await response.text()).splitlines() if line.strip()]
            if not lines or "error" in lines[-1]:
                raise SystemExit(f"{path}: {lines}")
            return lines[-1]


async def run_node(config: NodeConfig, work: Any) -> Any:
    node = await build(config)
    await node.start()
    runner = web.AppRunner(make_app(node))
    await runner.setup()
    await web.UnixSite(runner, str(config.socket_path)).start()
    await node.refresh()
    try:
        return await work(node)
    finally:
        await runner.cleanup()
        await node.close()


async def create_times(work: Path, rounds: int) -> dict[str, Any]:
    keys = init_keys(work / "keys")
    base_dir = work / "node" / "base"
    base_dir.mkdir(parents=True)
    small, large = make_base(base_dir, 2**30, "small"), make_base(base_dir, 20 * 2**30, "large")
    runner, url = await serve_list(keys, [small, large])
    config = NodeConfig(cache_dir=work / "node", catalogues=(CatalogueSource(url, keys.ca_dir, DN),),
                        listen=f"127.0.0.1:{free_port()}", select=__import__("nodecache.config").config.Selection(
                            none=True), provision=ProvisionConfig(hypervisor="qemu", default_memory=64))

    async def measure(node: Node) -> dict[str, list[float]]:
        times: dict[str, list[float]] = {"small": [], "large": []}
        for n in range(rounds):
            for label, image in (("small", small), ("large", large)):
                name = f"{label}-{n}"
                start = time.monotonic()
                await post(config.socket_path, "/vms", {"image": image.identifier, "name": name})
                times[label].append(time.monotonic() - start)
                assert await node.provisioner.hypervisor.running(name)
                await post(config.socket_path, f"/vms/{name}", method="DELETE")
        return times

    try:
        times = await run_node(config, measure)
    finally:
        await runner.cleanup()
    copy_target = work / "copy.raw"
    start = time.monotonic()
    subprocess.run(["cp", "--sparse=never", str(base_dir / f"{large.sha512}.raw"), str(copy_target)], check=True)
    subprocess.run(["sync", "-f", str(copy_target)], check=True)
    copy_seconds = time.monotonic() - start
    copy_target.unlink()
    return {"create_1GiB": statistics.median(times["small"]), "create_20GiB": statistics.median(times["large"]),
            "copy_20GiB": copy_seconds}


def fio(uri: str, mode: str, block: str, seconds: int) -> float:
    """MiB/s of one fio job on an NBD export."""
    out = subprocess.run(["fio", "--name=bench", "--ioengine=nbd", f"--uri={uri}", f"--rw={mode}", f"--bs={block}",
                          "--iodepth=16", f"--runtime={seconds}", "--time_based", "--size=100%",
                          "--output-format=json"], capture_output=True, text=True, check=True).stdout
    job = json.loads(out[out.index("{"):])["jobs"][0]  # fio prints a line of its own first
    side = job["write"] if "write" in mode else job["read"]
    return float(side["bw_bytes"]) / 2**20


def disk_speeds(work: Path, size: int, seconds: int, rounds: int) -> dict[str, dict[str, float]]:
    base = work / "fio-base.raw"
    raw = work / "fio-raw.raw"
    with open(base, "wb") as handle:
        block = os.urandom(4 * 2**20)
        for _ in range(size // len(block)):
            handle.write(block)
    os.chmod(base, 0o444)
    jobs = {"seq read 256k": ("read", "256k"), "seq write 256k": ("write", "256k"),
            "rand read 4k": ("randread", "4k"), "rand write 4k": ("randwrite", "4k")}
    results: dict[str, dict[str, list[float]]] = {j: {"raw": [], "overlay": []} for j in jobs}
    for _ in range(rounds):
        for subject in ("raw", "overlay"):
            overlay = work / "fio-overlay.qcow2"
            if subject == "raw":
                shutil.copyfile(base, raw)
                os.chmod(raw, 0o644)
                image, fmt = raw, "raw"
            else:
                overlay.unlink(missing_ok=True)
                subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "raw",
                                str(overlay)], check=True)
                image, fmt = overlay, "qcow2"
            socket = work / f"nbd-{subject}.sock"
            server = subprocess.Popen(["qemu-nbd", "-f", fmt, "-k", str(socket), "-t", "--cache=none", "--aio=native",
                                       "--discard=unmap", str(image)])
            try:
                for _ in range(100):
                    if socket.exists():
                        break
                    time.sleep(0.05)
                for job, (mode, block) in jobs.items():
                    results[job][subject].append(fio(f"nbd+unix:///?socket={socket}", mode, block, seconds))
            finally:
                server.terminate()
                server.wait()
            raw.unlink(missing_ok=True)
            overlay.unlink(missing_ok=True)
    return {job: {s: statistics.mean(v) for s, v in by.items()} for job, by in results.items()}


async def loop(work: Path, loops: int) -> dict[str, Any]:
    keys = init_keys(work / "keys-loop")
    base_dir = work / "loop" / "base"
    base_dir.mkdir(parents=True)
    image = make_base(base_dir, 2**30, "loop")
    runner, url = await serve_list(keys, [image])
    config = NodeConfig(cache_dir=work / "loop", catalogues=(CatalogueSource(url, keys.ca_dir, DN),),
                        listen=f"127.0.0.1:{free_port()}", provision=ProvisionConfig(hypervisor="libvirt",
                                                                                    libvirt_uri="test:///default"))

    async def work_loop(node: Node) -> dict[str, Any]:
        start = time.monotonic()
        for n in range(loops):
            await post(config.socket_path, "/vms", {"image": image.identifier, "name": f"loop-{n}"})
            await post(config.socket_path, f"/vms/loop-{n}", method="DELETE")
        seconds = time.monotonic() - start
        return {"loops": loops, "seconds": seconds, "leaks": await node.provisioner.leaks(),
                "references": [r.holder for r in await node.state.refs()]}

    try:
        return await run_node(config, work_loop)
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--disk-gib", type=float, default=2)
    parser.add_argument("--fio-seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--loops", type=int, default=100)
    parser.add_argument("--skip-fio", action="store_true")
    args = parser.parse_args()
    work = workdir("vmic-provision-")
    try:
        created = asyncio.run(create_times(work, max(args.rounds, 3)))
        print(f"create -> started (qemu TCG), median of {max(args.rounds, 3)}: 1 GiB base "
              f"{created['create_1GiB']:.3f} s, 20 GiB base {created['create_20GiB']:.3f} s "
              f"(20 GiB / 1 GiB: {created['create_20GiB'] / created['create_1GiB']:.2f})")
        print(f"copying the 20 GiB base: {created['copy_20GiB']:.1f} s -> create is "
              f"{created['copy_20GiB'] / created['create_20GiB']:.0f}x faster")
        speeds = {} if args.skip_fio else disk_speeds(work, int(args.disk_gib * 2**30), args.fio_seconds, args.rounds)
        if speeds:
            print(f"{'fio (qemu-nbd, cache=none)':>28} {'raw MiB/s':>10} {'overlay MiB/s':>14} {'overlay/raw':>12}")
            for job, by in speeds.items():
                print(f"{job:>28} {by['raw']:10.1f} {by['overlay']:14.1f} {by['overlay'] / by['raw']:12.2f}")
        looped = asyncio.run(loop(work, args.loops))
        clean = looped["leaks"] == {"files": [], "references": [], "domains": []} and not looped["references"]
        print(f"{looped['loops']} VMs created and destroyed in {looped['seconds']:.1f} s "
              f"({looped['seconds'] / looped['loops'] * 1000:.0f} ms a pair); leaks: "
              f"{'none' if clean else looped['leaks']}")
        write_result("provision", {**created, "fio": speeds, "loop": looped, "clean": clean})
    finally:
        for path in work.rglob("*"):
            if path.is_file():
                os.chmod(path, 0o644)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
