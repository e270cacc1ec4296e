"""``vmic publish FILE``: hash and upload at once, with progress bars; resumes where it stopped.

Zeros (holes, and blocks of zeros written out) are hashed but never sent
(:mod:`vmic.extent_stream`): a 20 GiB image holding 3 GiB sends about 3 GiB. The file
is hashed while it is sent; the last byte waits for the hash and carries it, and the
catalogue publishes only if its own hash of what arrived is the same.

A publish that is interrupted (Ctrl-C, dropped connection, machine restart) leaves its
upload location in ``$XDG_CACHE_HOME/vmic/uploads/``; running the same command again
asks the catalogue for the offset and sends only the rest (tus 1.0).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, RemoteError
from ..imagelist.model import COMPRESSIONS, FORMATS

if TYPE_CHECKING:
    from ..client import CatalogueClient


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--namespace", required=True)
    p.add_argument("--name", required=True, help="image name, e.g. slc6-batch")
    p.add_argument("--version", required=True, help="image version, e.g. 2026.11.24")
    p.add_argument("--title")
    p.add_argument("--description")
    p.add_argument("--format", choices=FORMATS, default="raw")
    p.add_argument("--compression", choices=COMPRESSIONS, default="none")
    p.add_argument("--hypervisor")
    p.add_argument("--os")
    p.add_argument("--osversion")
    p.add_argument("--arch")
    p.add_argument("--comments")
    p.add_argument("--ram-minimum", type=int)
    p.add_argument("--core-minimum", type=int)
    p.add_argument("--expires", help="ISO 8601 date after which the image leaves the list")
    p.add_argument("--identifier", help="UUID to use (default: the catalogue assigns one)")
    p.add_argument("--preheat", help="then push it to nodes: all | a share (0.25) | node names (hv1,hv2)")
    p.add_argument("--no-progress", action="store_true")


def _request(args: argparse.Namespace, size: int) -> dict[str, Any]:
    request: dict[str, Any] = {"namespace": args.namespace, "name": args.name, "version": args.version,
                               "size": size, "format": args.format,
                               "compression": args.compression}
    for key in ("title", "description", "hypervisor", "os", "osversion", "arch", "comments",
                "ram_minimum", "core_minimum", "expires", "identifier"):
        value = getattr(args, key)
        if value is not None:
            request[key] = value
    return request


def _state_file(url: str, path: Path, stat: os.stat_result, args: argparse.Namespace) -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vmic" / "uploads"
    key = f"{url}|{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{args.namespace}/{args.name}/{args.version}"
    return cache / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".json")


async def publish(args: argparse.Namespace, client: CatalogueClient) -> dict[str, Any]:
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    from ..sparse import sha512_file

    path: Path = args.file
    try:
        stat = path.stat()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    if stat.st_size == 0:
        raise ConfigError(f"{path} is empty")
    state_file = _state_file(client.url, path, stat, args)
    state = json.loads(state_file.read_text()) if state_file.exists() else {}
    loop = asyncio.get_running_loop()

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, disable=args.no_progress or not sys.stderr.isatty(), transient=False) as bar:
        digest: asyncio.Future[str] = loop.create_future()
        stop = threading.Event()  #: the upload failed: the hash stops at its next step
        if "sha512" in state:
            digest.set_result(state["sha512"])
        else:
            task = bar.add_task("hashing", total=stat.st_size)

            def hashed(done: int) -> None:
                if stop.is_set():
                    raise _Stopped
                bar.update(task, completed=done)

            digest = asyncio.ensure_future(loop.run_in_executor(None, sha512_file, path, hashed))

            def keep(done: asyncio.Future[str]) -> None:
                if not done.cancelled() and done.exception() is None:
                    state["sha512"] = done.result()
                    _save(state_file, state)

            digest.add_done_callback(keep)
        upload_task = bar.add_task("uploading", total=stat.st_size)

        def remember(location: str) -> None:
            state["location"] = location
            _save(state_file, state)

        try:
            async with client:
                location = state.get("location")
                if location is not None:
                    try:
                        await client.upload_offset(location)
                    except RemoteError as exc:
                        if exc.status != 404:
                            raise
                        location = None  # the catalogue forgot it (finished, aborted or swept)
                image = await client.upload(
                    path, _request(args, stat.st_size), location=location, sha512=digest,
                    progress=lambda done: bar.update(upload_task, completed=done), on_location=remember)
        finally:
            if not digest.done():  # else the command would end only once a hash nobody waits for ends
                stop.set()
                digest.cancel()
    state_file.unlink(missing_ok=True)
    return image


class _Stopped(Exception):
    """Raised in the hashing thread to stop it."""


def _save(state_file: Path, state: dict[str, Any]) -> None:
    state_file.parent.mkdir(parents=True, exist_ok=True)
    state_file.write_text(json.dumps(state))
