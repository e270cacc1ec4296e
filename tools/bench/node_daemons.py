"""Real node daemons (``nodecache run``) on the lab's hosts, for the network benchmarks:
started and followed over their sockets until an image is staged, and where their time
went, read from their logs.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import shutil
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from common import CatalogueUnderTest  # noqa: E402
from lab_services import PY, busy_since, cpu_ticks, publish, stop_all, tx_bytes, write_image  # noqa: E402
from netlab import Host  # noqa: E402

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


def keep_logs(work: Path, into: str | None, prefix: str = "") -> None:
    """Copy the node daemons' logs and the services' log of a run into the directory ``into``."""
    if not into:
        return
    Path(into).mkdir(parents=True, exist_ok=True)
    for log in [*work.glob("daemons/*/node.log"), work / "services.log"]:
        if log.is_file():
            shutil.copy(log, Path(into) / f"{prefix}{log.parent.name if log.name == 'node.log' else 'services'}.log")
