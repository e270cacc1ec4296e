"""``GET /imagelist`` requests/s under concurrent load vs a constant aiohttp handler.

    tools/bench/run imagelist.py [--images 50] [--seconds 10] [--connections 32]

The catalogue (``vmic serve``, its own process) holds ``--images`` published images;
its signed list is fetched once and served by a minimal aiohttp app (the baseline)
as a constant of the same size. ``wrk`` loads each in turn, in the same run.
The list is signed once per change, so the ratio shows the cost of the catalogue's
routing, middleware and conditional-GET handling. Both servers run on CPU 1 and wrk
on CPU 0 (taskset), so they do not fight over cores; the rounds alternate between
the two servers and the median ratio is reported. Goal: ratio >= 0.8.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CatalogueUnderTest, free_port, pinned, wait_port, workdir, write_result  # noqa: E402

from vmic.client import CatalogueClient  # noqa: E402


async def populate(catalogue: CatalogueUnderTest, work: Path, count: int) -> bytes:
    import hashlib
    import os

    async with CatalogueClient(catalogue.url, catalogue.TOKEN) as client:
        for n in range(count):
            path = work / f"img{n}.raw"
            path.write_bytes(os.urandom(4096))
            await client.upload(path, {"namespace": "bench", "name": f"image{n % 10}", "version": str(n),
                                       "size": 4096, "sha512": hashlib.sha512(path.read_bytes()).hexdigest(),
                                       "title": f"Benchmark image {n}", "os": "Debian", "osversion": "12"})
        return (await client.fetch("/imagelist")).body


def wrk(url: str, seconds: int, connections: int, script: str | None = None) -> dict[str, float]:
    """Load ``url`` with wrk (on CPU 0), optionally shaping requests with a Lua ``script``."""
    lua = ["-s", script] if script else []
    out = subprocess.run([*pinned(0), "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", *lua, url],
                         capture_output=True, text=True, check=True).stdout
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if found is None:
        raise SystemExit(f"imagelist.py: wrk printed no Requests/sec:\n{out}")
    rps = float(found.group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"{url}: {errors.group(1)} error responses")
    return {"rps": rps, "p99_ms": float(p99.group(1)) * scale[p99.group(2)] if p99 else float("nan")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (tools/bench/run installs it: apt-get install wrk)")
    work = workdir("vmic-bench-imagelist-")
    catalogue = CatalogueUnderTest(work, cpu=1)
    baseline = None
    try:
        body = asyncio.run(populate(catalogue, work, args.images))
        (work / "body").write_bytes(body)
        port = free_port()
        baseline = subprocess.Popen([*pinned(1), sys.executable, str(Path(__file__).parent / "constant_server.py"),
                                     str(work / "body"), str(port)])
        wait_port(port, baseline)
        wrk(f"{catalogue.url}/imagelist", 2, args.connections)  # warm up both
        wrk(f"http://127.0.0.1:{port}/imagelist", 2, args.connections)
        rounds = []
        for _ in range(args.rounds):
            ours = wrk(f"{catalogue.url}/imagelist", args.seconds, args.connections)
            const = wrk(f"http://127.0.0.1:{port}/imagelist", args.seconds, args.connections)
            rounds.append({"catalogue": ours, "constant": const, "ratio": ours["rps"] / const["rps"]})
        median = sorted(rounds, key=lambda r: r["ratio"])[len(rounds) // 2]
        ours, const, ratio = median["catalogue"], median["constant"], median["ratio"]
        print(f"signed list: {len(body)} bytes, {args.images} images, {args.connections} connections, "
              f"{args.rounds} rounds of {args.seconds}s each")
        per_round = ", ".join(format(r["ratio"], ".2f") for r in rounds)
        print(f"ratios per round         : {per_round}")
        print(f"constant aiohttp handler : {const['rps']:9.0f} req/s  p99 {const['p99_ms']:.2f} ms   (median round)")
        print(f"catalogue /imagelist     : {ours['rps']:9.0f} req/s  p99 {ours['p99_ms']:.2f} ms")
        print(f"ratio catalogue/constant : {ratio:.2f}   (goal >= 0.8)")
        write_result("imagelist", {"images": args.images, "body_bytes": len(body), "connections": args.connections,
                                   "seconds": args.seconds, "rounds": rounds, "catalogue": ours, "constant": const,
                                   "ratio": ratio, "goal": 0.8})
    finally:
        if baseline is not None:
            baseline.terminate()
            baseline.wait(10)
        catalogue.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
