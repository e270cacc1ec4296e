"""Staging throughput: the node cache's verify + decompress/convert + write of one image,
as a ratio to the same bytes through ``cat`` to the same disk (plus fsync), in one run.

    tools/bench/run stage.py --size-gib 4

Rows (each the best of --rounds, the source warm in the page cache for both):

- copy: published raw -> base raw through the staging pipeline (sha512 and write
  overlapped in two threads, zero blocks skipped) -- the path of compressed images and
  of the LVM backend; the goal is >= 0.8 of cat;
- link: published raw -> base raw on a node that seeds (the base is a hard link to
  the verified download: one hashing pass, no copy);
- qcow2: published raw -> base qcow2 (hash pass, then qemu-img convert);
- zstd: a zstd-compressed image (level 3) -> base raw, decompressed in the same pass.

The image is random data with a zero stretch every 64 MiB (as real images have),
so skipping zero blocks helps a little and decompression is realistic.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))
from common import sha512_seconds, workdir, write_result  # noqa: E402

from nodecache.storage import pipeline  # noqa: E402
from nodecache.storage.base import metadata_for  # noqa: E402
from nodecache.storage.files import FileStorage  # noqa: E402
from vmic.imagelist.model import EXT_COMPRESSION, Image  # noqa: E402


def make_image(path: Path, size: int) -> str:
    digest = hashlib.sha512()
    block = os.urandom(4 * 2**20)
    zeros = bytes(4 * 2**20)
    with open(path, "wb") as out:
        for i in range(size // len(block)):
            data = zeros if i % 16 == 15 else block[i % 13:] + block[: i % 13]
            digest.update(data)
            out.write(data)
    return digest.hexdigest()


def cat_seconds(source: Path, target: Path) -> float:
    target.unlink(missing_ok=True)
    start = time.monotonic()
    subprocess.run(f"cat {source} > {target} && sync -f {target}", shell=True, check=True)
    seconds = time.monotonic() - start
    target.unlink()
    return seconds


def stage_seconds(source: Path, image: Image, base_dir: Path, node_format: str) -> float:
    shutil.rmtree(base_dir, ignore_errors=True)
    backend = FileStorage(base_dir, node_format, base_dir.parent / "vms")
    start = time.monotonic()
    asyncio.run(backend.stage(source, image, metadata_for(image, node_format, "bench", 1), lambda n: None))
    seconds = time.monotonic() - start
    for path in base_dir.iterdir():
        os.chmod(path, 0o644)
    shutil.rmtree(base_dir)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-gib", type=float, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip", default="", help="comma-separated rows to leave out (link,qcow2,zstd)")
    args = parser.parse_args()
    size = int(args.size_gib * 2**30) // (4 * 2**20) * 4 * 2**20
    work = workdir("vmic-stage-")
    try:
        source = work / "image.raw"
        sha = make_image(source, size)
        image = Image(identifier="bench", uri="http://x", size=size, sha512=sha, version="1", format="raw")
        cat = min(cat_seconds(source, work / "cat.out") for _ in range(args.rounds))
        hashing = sha512_seconds(source, args.rounds)  # the true limit where the disk is faster than sha512
        rows: dict[str, float] = {}
        def copy_once() -> float:
            target = work / "copy.raw"
            target.unlink(missing_ok=True)
            start = time.monotonic()
            pipeline.copy_verified(source, target, sha, "none", "raw", lambda n: None)
            seconds = time.monotonic() - start
            target.unlink()
            return seconds

        # the copy path: what a compressed image or the LVM backend goes through (pipeline, not link)
        rows["copy"] = min(copy_once() for _ in range(args.rounds))
        skip = set(args.skip.split(","))
        if "link" not in skip:
            rows["link"] = min(stage_seconds(source, image, work / "base", "raw") for _ in range(args.rounds))
        if "qcow2" not in skip:
            rows["qcow2"] = min(stage_seconds(source, image, work / "base", "qcow2") for _ in range(args.rounds))
        if "zstd" not in skip:
            import zstandard

            packed_zstd = work / "image.zst"
            with open(source, "rb") as raw, open(packed_zstd, "wb") as out:
                zstandard.ZstdCompressor(level=3, threads=-1).copy_stream(raw, out)
            zimage = Image(identifier="bench", uri="http://x", size=packed_zstd.stat().st_size,
                           sha512=hashlib.sha512(packed_zstd.read_bytes()).hexdigest(), version="1", format="raw",
                           extra={EXT_COMPRESSION: "zstd"})
            rows["zstd"] = min(stage_seconds(packed_zstd, zimage, work / "base", "raw") for _ in range(args.rounds))
        mib = size / 2**20
        limit = max(cat, hashing)  # the slower of the disk and one sha512 pass
        print(f"image {mib / 1024:.1f} GiB; cat + fsync: {cat:.2f} s ({mib / cat:.0f} MiB/s); "
              f"one sha512 pass: {hashing:.2f} s ({mib / hashing:.0f} MiB/s)")
        print(f"{'path':>6} {'seconds':>8} {'MiB/s':>7} {'vs cat':>7} {'vs sha512':>9} {'vs limit':>8}")
        for name, seconds in rows.items():
            print(f"{name:>6} {seconds:8.2f} {mib / seconds:7.0f} {cat / seconds:7.2f} {hashing / seconds:9.2f} "
                  f"{limit / seconds:8.2f}")
        write_result("stage", {"size_bytes": size, "cat_seconds": cat, "sha512_seconds": hashing,
                               "rows": {k: {"seconds": v, "ratio_to_cat": cat / v, "ratio_to_sha512": hashing / v,
                                            "ratio_to_limit": limit / v} for k, v in rows.items()}})
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
