"""Upload throughput of the catalogue vs plain file writes to the same disk.

    tools/bench/run upload.py [--size-mib 2048]

Baseline: the same bytes written with plain ``write()`` calls and one ``fsync``
into the same directory. Measured: a tus upload of the file (PATCH to 201: the
catalogue receives, hashes sha512, writes, syncs, moves into the blob store and
publishes). Both read the source from the page cache. Goal: ratio >= 0.7.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CatalogueUnderTest, sha512_seconds, workdir, write_result  # noqa: E402

from vmic.client import CatalogueClient  # noqa: E402
from vmic.sparse import sha512_file  # noqa: E402

CHUNK = 4 * 2**20


def make_source(path: Path, size: int) -> None:
    block = os.urandom(CHUNK)
    with open(path, "wb") as out:
        for n in range(size // CHUNK):
            out.write(block[n % 7:] + block[: n % 7])  # distinct blocks, cheap to make


def plain_write(source: Path, target: Path) -> float:
    start = time.perf_counter()
    with open(source, "rb") as src, open(target, "wb") as dst:
        while block := src.read(CHUNK):
            dst.write(block)
        dst.flush()
        os.fsync(dst.fileno())
    return time.perf_counter() - start


async def upload(catalogue: CatalogueUnderTest, source: Path, sha512: str, version: str) -> float:
    async with CatalogueClient(catalogue.url, catalogue.TOKEN) as client:
        request = {"namespace": "bench", "name": "upload", "version": version, "size": source.stat().st_size,
                   "sha512": sha512}
        location = await client.start_upload(request)
        start = time.perf_counter()
        image = await client.send(location, source, 0)
        elapsed = time.perf_counter() - start
    assert image is not None and image["sha512"] == sha512, "upload did not publish"
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=2048)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    size = args.size_mib * 2**20
    work = workdir("vmic-bench-upload-")
    catalogue = CatalogueUnderTest(work)
    try:
        source = work / "source.raw"
        print(f"making a {args.size_mib} MiB source file in {work} ...")
        make_source(source, size)
        sha512 = sha512_file(source)
        os.sync()  # nothing of the source left to flush while measuring
        plain, uploads = [], []
        for run in range(args.runs):
            target = catalogue.data_dir / f"plain-{run}.raw"
            plain.append(plain_write(source, target))
            target.unlink()
            os.sync()
            uploads.append(asyncio.run(upload(catalogue, source, sha512, f"r{run}")))
            os.sync()
        best_plain, best_upload = min(plain), min(uploads)
        hashing = sha512_seconds(source, args.runs)  # the catalogue hashes every byte: the true limit
        limit = max(best_plain, hashing)
        mib = size / 2**20
        ratio = best_plain / best_upload
        print(f"plain write + fsync : {mib / best_plain:8.0f} MiB/s   (runs: {', '.join(f'{t:.2f}s' for t in plain)})")
        print(f"catalogue upload    : {mib / best_upload:8.0f} MiB/s   (runs: {', '.join(f'{t:.2f}s' for t in uploads)})")
        print(f"one sha512 pass     : {mib / hashing:8.0f} MiB/s")
        print(f"ratio upload/plain  : {ratio:.2f}   (goal >= 0.7)")
        print(f"ratio upload/sha512 : {hashing / best_upload:.2f}   upload/limit (the slower of the two): "
              f"{limit / best_upload:.2f}")
        write_result("upload", {
            "size_bytes": size, "runs": args.runs, "plain_seconds": plain, "upload_seconds": uploads,
            "plain_mib_s": mib / best_plain, "upload_mib_s": mib / best_upload, "ratio": ratio, "goal": 0.7,
            "sha512_seconds": hashing, "ratio_to_sha512": hashing / best_upload, "ratio_to_limit": limit / best_upload,
        })
    finally:
        catalogue.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
