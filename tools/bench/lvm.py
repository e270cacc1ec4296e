"""The LVM backend on real device-mapper, measured in a guest (``tools/guest.py``), each
figure against a baseline from the same run:

    tools/bench/run lvm.py [--size-mib 512] [--rounds 3]

- stage: ``LvmStorage.stage`` of a raw image (sha512 and the write into a fresh volume
  overlapped, then tag, read-only, rename) against ``dd oflag=direct`` of the same
  bytes into a fresh volume of the same size (goal >= 0.8), and against one plain
  sha512 pass over them (the staging's own floor: it cannot end before its hash does);
- snapshot: thin snapshot creation (``lvcreate -s --thinpool``, the read-only base as
  external origin, what ``vmprov create`` does) of a 1 GiB and a 20 GiB base (goal:
  flat in size, <= 0.5 s) against copying the base with ``dd`` (the 1 GiB copy is
  measured; the 20 GiB one is that times 20);
- read: sequential (``dd iflag=direct``, 1 MiB blocks) and random 4 KiB (``fio``,
  libaio, direct, iodepth 16) reads through a thin snapshot against the base volume.

The guest runs under TCG here: absolute figures are the emulator's, the ratios are the
point. The result goes to ``tools/bench/results/lvm.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

VG = "benchvg"
ENV = {**os.environ, "LVM_SUPPRESS_FD_WARNINGS": "1"}


def sh(*args: str) -> str:
    result = subprocess.run(args, capture_output=True, text=True, env=ENV)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def timed(*args: str) -> float:
    started = time.perf_counter()
    sh(*args)
    return time.perf_counter() - started


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def make_image(path: Path, size: int) -> None:
    with open(path, "wb") as out:
        chunk = os.urandom(4 * 2**20)
        for index in range(size // len(chunk)):
            out.write(chunk[:-8] + index.to_bytes(8, "big"))


def stage_round(image: Path, size: int, scratch: Path) -> dict[str, float]:
    from nodecache.lvm import VolumeGroup
    from nodecache.storage.base import metadata_for
    from nodecache.storage.lvm import LvmStorage
    from vmic.imagelist.model import Image

    digest = hashlib.sha512()
    started = time.perf_counter()
    with open(image, "rb") as handle:
        while block := handle.read(4 * 2**20):
            digest.update(block)
    sha_seconds = time.perf_counter() - started
    record = Image(identifier="bench", uri="http://x", size=size, sha512=digest.hexdigest(), version="1",
                   title="bench/lvm")
    backend = LvmStorage(VolumeGroup(VG), scratch)
    started = time.perf_counter()
    asyncio.run(backend.stage(image, record, metadata_for(record, "raw", "http://bench", 1), lambda n: None))
    stage_seconds = time.perf_counter() - started
    asyncio.run(backend.remove(record.sha512))

    sh("lvcreate", "-q", "-an", "-Zn", "-L", f"{size}b", "-n", "ddtarget", VG)
    sh("lvchange", "-ay", f"{VG}/ddtarget")
    dd_seconds = timed("dd", f"if={image}", f"of=/dev/{VG}/ddtarget", "bs=4M", "oflag=direct", "status=none")
    sh("lvremove", "-y", f"{VG}/ddtarget")
    return {"stage_s": stage_seconds, "dd_s": dd_seconds, "sha512_s": sha_seconds}


def snapshot_times(sizes_gib: tuple[int, ...], rounds: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for gib in sizes_gib:
        base = f"base{gib}"
        sh("lvcreate", "-q", "-an", "-Zn", "-L", f"{gib}g", "-n", base, VG)
        sh("lvchange", "-pr", f"{VG}/{base}")
        times = []
        for index in range(rounds):
            times.append(timed("lvcreate", "-q", "-s", "--thinpool", f"{VG}/pool", f"{VG}/{base}",
                               "-n", f"snap{gib}_{index}", "-kn"))
        for index in range(rounds):
            sh("lvremove", "-y", f"{VG}/snap{gib}_{index}")
        out[f"{gib}GiB"] = min(times)
    return out


def copy_seconds(gib: int) -> float:
    sh("lvcreate", "-q", "-an", "-Zn", "-L", f"{gib}g", "-n", "copysrc", VG)
    sh("lvcreate", "-q", "-an", "-Zn", "-L", f"{gib}g", "-n", "copydst", VG)
    sh("lvchange", "-ay", f"{VG}/copysrc")
    sh("lvchange", "-ay", f"{VG}/copydst")
    seconds = timed("dd", f"if=/dev/{VG}/copysrc", f"of=/dev/{VG}/copydst", "bs=4M", "iflag=direct",
                    "oflag=direct", "status=none")
    sh("lvremove", "-y", f"{VG}/copysrc", f"{VG}/copydst")
    return seconds


def read_figures(image: Path, size: int) -> dict[str, float]:
    sh("lvcreate", "-q", "-an", "-Zn", "-L", f"{size}b", "-n", "readbase", VG)
    sh("lvchange", "-ay", f"{VG}/readbase")
    sh("dd", f"if={image}", f"of=/dev/{VG}/readbase", "bs=4M", "oflag=direct", "status=none")
    sh("lvchange", "-an", f"{VG}/readbase")
    sh("lvchange", "-pr", f"{VG}/readbase")
    sh("lvcreate", "-q", "-s", "--thinpool", f"{VG}/pool", f"{VG}/readbase", "-n", "readsnap", "-kn")
    sh("lvchange", "-ay", "-K", f"{VG}/readbase")
    figures: dict[str, float] = {}
    for name in ("readbase", "readsnap"):
        device = f"/dev/{VG}/{name}"
        drop_caches()
        seconds = timed("dd", f"if={device}", "of=/dev/null", "bs=1M", "iflag=direct", "status=none")
        figures[f"{name}_seq_mib_s"] = size / 2**20 / seconds
        body = json.loads(sh("fio", "--name=rand", f"--filename={device}", "--rw=randread", "--bs=4k",
                             "--direct=1", "--ioengine=libaio", "--iodepth=16", "--runtime=5", "--time_based",
                             "--readonly", "--output-format=json"))
        figures[f"{name}_rand_iops"] = body["jobs"][0]["read"]["iops"]
    sh("lvremove", "-y", f"{VG}/readsnap")
    sh("lvchange", "-an", f"{VG}/readbase")
    sh("lvremove", "-y", f"{VG}/readbase")
    return figures


def in_guest(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    sh("pvcreate", "-q", "-y", "/dev/vda")
    sh("vgcreate", "-q", VG, "/dev/vda")
    sh("lvcreate", "-q", "-T", "-L", "4g", f"{VG}/pool")
    size = args.size_mib * 2**20
    image = Path("/tmp/image.raw")  # the guest's memory: the source is not the bottleneck
    make_image(image, size)
    rounds = [stage_round(image, size, work / "scratch") for _ in range(args.rounds)]
    best = {key: min(r[key] for r in rounds) for key in rounds[0]}
    return {"size_mib": args.size_mib, "stage": best, "stage_rounds": rounds,
            "snapshot_s": snapshot_times((1, 20), args.rounds), "copy_1GiB_s": copy_seconds(1),
            "read": read_figures(image, size)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--in-guest", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.in_guest:
        args.in_guest.joinpath("lvm.json").write_text(json.dumps(in_guest(args, args.in_guest)))
        return

    from common import workdir, write_result
    from guest import run

    work = workdir("vmic-bench-lvm-")
    command = [sys.executable, str(Path(__file__).resolve()), "--size-mib", str(args.size_mib),
               "--rounds", str(args.rounds), "--in-guest", str(work)]
    result = run(command, work, disks=("40G",), memory_mib=args.size_mib + 2048, timeout=3600)
    if result.returncode != 0:
        raise SystemExit(f"the benchmark failed in the guest:\n{result.output[-3000:]}")
    figures = json.loads((work / "lvm.json").read_text())
    stage, snap, read = figures["stage"], figures["snapshot_s"], figures["read"]
    ratios = {
        "stage_vs_dd": stage["dd_s"] / stage["stage_s"],
        "stage_vs_sha512": stage["sha512_s"] / stage["stage_s"],
        "stage_vs_slower_of_dd_and_sha512": max(stage["dd_s"], stage["sha512_s"]) / stage["stage_s"],
        "snapshot_20GiB_vs_1GiB": snap["20GiB"] / snap["1GiB"],
        "snapshot_1GiB_vs_copy": snap["1GiB"] / figures["copy_1GiB_s"],
        "snapshot_20GiB_vs_copy": snap["20GiB"] / (20 * figures["copy_1GiB_s"]),
        "read_seq_snapshot_vs_base": read["readsnap_seq_mib_s"] / read["readbase_seq_mib_s"],
        "read_rand_snapshot_vs_base": read["readsnap_rand_iops"] / read["readbase_rand_iops"],
    }
    mib = args.size_mib
    print(f"guest: {result.accel}, {result.seconds:.0f} s; image {mib} MiB, best of {args.rounds}")
    print(f"stage        {mib / stage['stage_s']:8.1f} MiB/s   dd oflag=direct {mib / stage['dd_s']:8.1f} MiB/s"
          f"   sha512 {mib / stage['sha512_s']:8.1f} MiB/s")
    print(f"             ratio to dd {ratios['stage_vs_dd']:.2f}, to sha512 {ratios['stage_vs_sha512']:.2f}, "
          f"to the slower of the two {ratios['stage_vs_slower_of_dd_and_sha512']:.2f}")
    print(f"snapshot     1 GiB {snap['1GiB']:.3f} s, 20 GiB {snap['20GiB']:.3f} s (ratio "
          f"{ratios['snapshot_20GiB_vs_1GiB']:.2f}); copying 1 GiB {figures['copy_1GiB_s']:.2f} s: "
          f"snapshot/copy {ratios['snapshot_1GiB_vs_copy']:.3f} (1 GiB), {ratios['snapshot_20GiB_vs_copy']:.4f} "
          "(20 GiB)")
    print(f"read         sequential {read['readsnap_seq_mib_s']:.0f} vs {read['readbase_seq_mib_s']:.0f} MiB/s "
          f"({ratios['read_seq_snapshot_vs_base']:.2f}); random 4 KiB {read['readsnap_rand_iops']:.0f} vs "
          f"{read['readbase_rand_iops']:.0f} IOPS ({ratios['read_rand_snapshot_vs_base']:.2f})")
    write_result("lvm", {"accel": result.accel, "guest_seconds": result.seconds, **figures, "ratios": ratios})


if __name__ == "__main__":
    main()
