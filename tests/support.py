"""Test support: real certificates, real catalogue servers on loopback, helpers.

Fixtures are re-exported by conftest.py; tests import helpers from here.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from distributor.tracker.server import Tracker, TrackerConfig, make_app
from vmic.catalogue.config import CatalogueConfig, Publisher, hash_token
from vmic.catalogue.service import Catalogue
from vmic.catalogue.tls import server_context
from vmic.catalogue.web import make_runner
from vmic.catalogue.wiring import CatalogueSite
from vmic.catalogue.wiring import build as build_catalogue
from vmic.catalogue_source import CatalogueSource
from vmic.client import CatalogueClient, tls_context
from vmic.json_body import runner_options
from vmic.listening import bind
from vmic.pki import KeyPaths, init_keys
from vmic.torrents import Torrent
from vmic.units import format_listen

ENDORSER_DN = "/C=CH/O=vmic test/CN=test endorser"
CA_DN = "/C=CH/O=vmic test/CN=test CA"
TOKENS = {"alice": "alice-secret-token", "bob": "bob-secret-token"}


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> KeyPaths:
    return init_keys(tmp_path_factory.mktemp("keys"), endorser_dn=ENDORSER_DN, ca_dn=CA_DN)


@pytest.fixture(scope="session")
def other_keys(tmp_path_factory: pytest.TempPathFactory) -> KeyPaths:
    """A second CA with an endorser of the *same* DN: trusted by nobody here."""
    return init_keys(tmp_path_factory.mktemp("other-keys"), endorser_dn=ENDORSER_DN, ca_dn="/C=XX/O=evil/CN=evil CA")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: listening sockets made before their server exists (reserved_port), by port
RESERVED: dict[int, socket.socket] = {}


def reserved_port(host: str = "127.0.0.1") -> int:
    """A port that is already bound and listening (the server started later takes the
    socket over: :func:`listening_on`), so no other process can take it in between, as
    one can from :func:`free_port` on a busy machine."""
    sock = bind(host, 0)
    port = int(sock.getsockname()[1])
    RESERVED[port] = sock
    return port


def listening_on(host: str, port: int) -> socket.socket:
    """The socket :func:`reserved_port` made for ``port``, else one bound now."""
    return RESERVED.pop(port, None) or bind(host, port)


def make_config(data_dir: Path, keys: KeyPaths, **overrides: Any) -> CatalogueConfig:
    config = CatalogueConfig(
        data_dir=data_dir,
        listen=f"127.0.0.1:{free_port()}",  # a process of its own binds it (catalogue_factory reserves)
        endorser_cert=keys.cert,
        endorser_key=keys.key,
        publishers=(
            Publisher("alice", hash_token(TOKENS["alice"]), ("alice", "shared"), admin=True),
            Publisher("bob", hash_token(TOKENS["bob"]), ("bob",)),
        ),
    )
    return replace(config, **overrides)


def config_toml(config: CatalogueConfig) -> str:
    lines = ["[catalogue]"]
    for key in ("data_dir", "listen", "endorser_cert", "endorser_key", "database", "max_upload_bytes"):
        value = getattr(config, key)
        lines.append(f"{key} = {value!r}" if isinstance(value, int) else f'{key} = "{value}"')
    for p in config.publishers:
        lines += [f"[catalogue.publishers.{p.name}]", f'token_sha256 = "{p.token_sha256}"',
                  "namespaces = [" + ", ".join(f'"{n}"' for n in p.namespaces) + "]"]
    return "\n".join(lines) + "\n"


@dataclass
class RunningCatalogue:
    """A catalogue serving on a real loopback port, in this process."""

    catalogue: Catalogue
    config: CatalogueConfig
    runner: web.AppRunner
    site: CatalogueSite
    #: the CA of its HTTPS certificate, for clients (tests/test_https_followers.py)
    tls_ca: Path | None = None

    @property
    def url(self) -> str:
        return self.config.url

    def client(self, publisher: str | None = "alice") -> CatalogueClient:
        return CatalogueClient(self.url, TOKENS[publisher] if publisher else None, ssl_context=tls_context(self.tls_ca))

    async def stop(self) -> None:
        await self.runner.cleanup()
        await self.site.close()


async def start_catalogue(config: CatalogueConfig) -> RunningCatalogue:
    site = await build_catalogue(config)
    runner = make_runner(site.catalogue, site.syncer)
    await runner.setup()
    await web.SockSite(runner, listening_on(config.host, config.port), ssl_context=server_context(config)).start()
    return RunningCatalogue(site.catalogue, config, runner, site)


@pytest.fixture
async def catalogue_factory(tmp_path: Path, keys: KeyPaths) -> AsyncIterator[Callable[..., Any]]:
    started: list[RunningCatalogue] = []

    async def factory(**overrides: Any) -> RunningCatalogue:
        data_dir = overrides.pop("data_dir", tmp_path / f"catalogue{len(started)}")
        overrides.setdefault("listen", f"127.0.0.1:{reserved_port()}")
        config = make_config(data_dir, keys, **overrides)
        running = await start_catalogue(config)
        started.append(running)
        return running

    yield factory
    for running in started:
        await running.stop()


@pytest.fixture
async def catalogue(catalogue_factory: Callable[..., Any]) -> RunningCatalogue:
    return await catalogue_factory()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def write_image(path: Path, size: int, seed: int = 1) -> Path:
    """A file of ``size`` pseudo-random bytes (deterministic per seed)."""
    import random

    rng = random.Random(seed)
    with open(path, "wb") as out:
        left = size
        while left:
            n = min(left, 1 << 20)
            out.write(rng.randbytes(n))
            left -= n
    return path


def write_sparse_image(path: Path, size: int, data: list[tuple[int, int]], seed: int = 1) -> Path:
    """A file of ``size`` bytes that is a hole except the ``(offset, length)`` runs of
    pseudo-random ``data`` (what a golden image looks like, at a small scale)."""
    import random

    rng = random.Random(seed)
    with open(path, "wb") as out:
        out.truncate(size)
        for offset, length in data:
            out.seek(offset)
            out.write(rng.randbytes(length))
    return path


def have_pieces(resume: Path) -> int:
    """How many pieces a libtorrent resume file records as verified and written."""
    import libtorrent as lt

    return sum(1 for piece in lt.read_resume_data(resume.read_bytes()).have_pieces if piece)


def sha512(path: Path) -> str:
    from vmic.sparse import sha512_file

    return sha512_file(path)


def auth(publisher: str = "alice") -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[publisher]}", "Tus-Resumable": "1.0.0"}


def upload_request(path: Path, name: str = "golden", version: str = "1", namespace: str = "alice",
                   **extra: Any) -> dict[str, Any]:
    return {"namespace": namespace, "name": name, "version": version, "size": path.stat().st_size,
            "sha512": sha512(path), "format": "raw", "os": "Debian", "osversion": "12", **extra}


VMIC = [sys.executable, "-m", "vmic.cli.main"]


class CatalogueProcess:
    """``vmic serve`` as a separate process (for SIGKILL and start-up tests)."""

    def __init__(self, config: CatalogueConfig, config_path: Path) -> None:
        config_path.write_text(config_toml(config))
        self.config = config
        self.config_path = config_path
        self.log = config_path.with_suffix(".log")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True) -> CatalogueProcess:
        log = open(self.log, "ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([*VMIC, "serve", "-c", str(self.config_path)], stdout=log, stderr=log, env=env)
        if wait:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"catalogue exited: {self.log.read_text()[-2000:]}")
                try:  # answering, not merely accepting: the port is bound before the catalogue is built
                    with urllib.request.urlopen(f"http://127.0.0.1:{self.config.port}/healthz", timeout=1):
                        return self
                except OSError:
                    time.sleep(0.05)
            raise RuntimeError("catalogue did not start")
        return self

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def identities(images: tuple) -> list[tuple[str, str]]:  # type: ignore[type-arg]
    """(identifier, sha512) of list entries: what must not change while fields such as
    the torrent's info hashes are added in the background."""
    return [(i.identifier, i.sha512) for i in images]


# --- the distributor: a catalogue with its tracker, and seeders -----------------------------


async def start_tracker(catalogue_url: str, keys: KeyPaths, host: str, port: int, endorser_dn: str = ENDORSER_DN,
                        tls_ca: Path | None = None) -> tuple[Tracker, web.AppRunner]:
    """Our tracker, following the catalogue at ``catalogue_url``, on ``host:port``."""
    tracker = Tracker.from_config(TrackerConfig(CatalogueSource(catalogue_url, keys.ca_dir, endorser_dn, tls_ca=tls_ca),
                                                listen=format_listen(host, port), interval=5, min_interval=1))
    runner = web.AppRunner(make_app(tracker), **runner_options(tracker.config.header_timeout))
    await runner.setup()
    await web.SockSite(runner, listening_on(host, port)).start()
    return tracker, runner


@pytest.fixture
async def site(catalogue_factory: Callable[..., Any], keys: KeyPaths) -> AsyncIterator[tuple[RunningCatalogue, Tracker, str]]:
    """A catalogue whose torrents name a tracker, and that tracker following it (loopback)."""
    port = reserved_port()
    announce_url = f"http://127.0.0.1:{port}/announce"
    catalogue = await catalogue_factory(trackers=announce_url)
    tracker, runner = await start_tracker(catalogue.url, keys, "127.0.0.1", port)
    yield catalogue, tracker, announce_url
    await runner.cleanup()


@pytest.fixture
def lab() -> Any:
    """Hosts in network namespaces (tools/netlab.py); skipped where they cannot be made."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    from netlab import Lab, LabUnavailable

    try:
        lab = Lab().__enter__()
    except LabUnavailable as exc:
        pytest.skip(f"no network namespaces here: {exc}")
    try:
        yield lab
    finally:
        lab.close()


def logged(caplog: pytest.LogCaptureFixture, message: str) -> list[dict[str, Any]]:
    """The fields of every structured event ``message`` captured so far (:func:`vmic.log.event`)."""
    return [r.__dict__.get("fields", {}) for r in caplog.records if r.getMessage() == message]


async def until(condition: Callable[[], bool], what: str, seconds: float = 60) -> None:
    """Wait until ``condition()`` holds (checked every 50 ms), or fail saying ``what``."""
    for _ in range(int(seconds / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for: {what}")


async def publish_and_wait(catalogue: RunningCatalogue, path: Path, tracker: Tracker | None = None,
                           **request: Any) -> tuple[dict, Torrent]:
    """Publish ``path``; wait for its torrent (made in the background) and, given a
    tracker, until the tracker has heard of it; return the record and the torrent."""
    async with catalogue.client() as client:
        record = await client.upload(path, upload_request(path, **request))

    def ready() -> bool:
        image = catalogue.catalogue.listing.current.image_list.image(record["identifier"])
        if image is None or "vmic:btih" not in image.extra:
            return False
        return tracker is None or bytes.fromhex(image.extra["vmic:btih"]) in tracker.allowlist

    await until(ready, "the image's torrent (and the tracker knowing it)", 10)
    async with catalogue.client(None) as client:
        torrent = Torrent.parse((await client.fetch(f"/images/{record['identifier']}.torrent")).body)
    return record, torrent


def stock_client(name: str, torrent_file: Path, out: Path, bind: str | None = None) -> list[str]:
    """A stock Debian client's command line, kept off DHT, LPD, PEX and port mapping, so it
    talks only to the addresses it is given (``bind``: the address Transmission listens on)."""
    if name == "aria2c":
        return ["aria2c", "--dir", str(out), "--seed-time=0", "--enable-dht=false", "--enable-dht6=false",
                "--bt-enable-lpd=false", "--enable-peer-exchange=false", "--no-conf", "--file-allocation=none",
                "--summary-interval=0", "--bt-stop-timeout=60", str(torrent_file)]
    config = out.parent / "transmission-config"
    config.mkdir(exist_ok=True)
    settings: dict[str, Any] = {
        "dht-enabled": False, "lpd-enabled": False, "pex-enabled": False, "port-forwarding-enabled": False,
        "utp-enabled": False, "peer-port": free_port(), "incomplete-dir-enabled": False, "rpc-enabled": False}
    if bind:
        settings["bind-address-ipv4"] = bind
    (config / "settings.json").write_text(json.dumps(settings))
    return ["transmission-cli", "-g", str(config), "-w", str(out), "-M", "-ep", str(torrent_file)]


async def run_until_file(cmd: list[str], target: Path, sha512: str, timeout: float = 90) -> None:
    """Run a client until ``target`` holds the bytes of ``sha512``, then stop it (aria2c exits
    by itself when done; transmission-cli would go on seeding)."""
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.DEVNULL)
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            exited = proc.returncode is not None
            if target.is_file() and hashlib.sha512(target.read_bytes()).hexdigest() == sha512:
                return
            if exited:
                break
            await asyncio.sleep(0.2)
        raise AssertionError(f"{cmd[0]} did not produce {target.name} with the listed sha512")
    finally:
        if proc.returncode is None:
            proc.terminate()
            await proc.wait()




@contextlib.asynccontextmanager
async def running_seeder(catalogue: RunningCatalogue, keys: KeyPaths, state_dir: Path,
                         listen: str | None = None, endorser_dn: str = ENDORSER_DN,
                         tls_ca: Path | None = None, **overrides: Any) -> AsyncIterator[Any]:
    """A seeder daemon following ``catalogue``, seeding its blob store in place (on loopback
    unless ``listen`` says otherwise)."""
    from distributor.seeder.daemon import Seeder, SeederConfig

    seeder = Seeder(SeederConfig(CatalogueSource(catalogue.url, keys.ca_dir, endorser_dn, tls_ca=tls_ca),
                                 blob_dir=catalogue.catalogue.blobs.blob_dir, state_dir=state_dir,
                                 listen=listen or f"127.0.0.1:{free_port()}", poll_interval=3600, **overrides))
    await seeder.start()
    task = asyncio.create_task(seeder.run())
    try:
        yield seeder
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await seeder.close()


# --- node daemons ---------------------------------------------------------------------------


def node_config(cache_dir: Path, catalogue_url: str, keys: KeyPaths, **overrides: Any) -> Any:
    """A node daemon's config following ``catalogue_url`` (BitTorrent on loopback)."""
    from nodecache.config import NodeConfig

    settings: dict[str, Any] = {
        "cache_dir": cache_dir, "catalogues": (CatalogueSource(catalogue_url, keys.ca_dir, ENDORSER_DN),),
        "listen": f"127.0.0.1:{free_port()}", "poll_interval": 3600.0, "format": "raw"}
    settings.update(overrides)
    return NodeConfig(**settings)


def node_toml(config: Any) -> str:
    """The TOML file a node daemon process reads for ``config``."""
    lines = ["[nodecache]"]
    for name, value in config.__dict__.items():
        if name in ("catalogues", "select", "provision") or value is None:
            continue
        lines.append(f"{name} = {json.dumps(str(value) if isinstance(value, Path) else value)}")
    for source in config.catalogues:
        lines += ["[[nodecache.catalogue]]", f"url = {json.dumps(source.url)}", f"ca = {json.dumps(str(source.ca))}",
                  f"endorser_dn = {json.dumps(source.endorser_dn)}"]
        if source.tls_ca is not None:
            lines.append(f"tls_ca = {json.dumps(str(source.tls_ca))}")
    return "\n".join(lines) + "\n"


@contextlib.asynccontextmanager
async def running_node(config: Any) -> AsyncIterator[Any]:
    """A node daemon in this process: started, following, its API on its Unix socket."""
    from nodecache.api import make_app
    from nodecache.wiring import build

    node = await build(config)
    await node.start()
    runner = web.AppRunner(make_app(node))
    await runner.setup()
    await web.UnixSite(runner, str(config.socket_path)).start()
    task = asyncio.create_task(node.run())
    try:
        yield node
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await runner.cleanup()
        await node.close()


async def node_api(socket: Path, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    """A node daemon's API over its Unix socket: the status and the last JSON line of the answer."""
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(socket))) as session:
        async with session.request(method, f"http://node{path}", json=body) as response:
            lines = [json.loads(line) for line in (await response.text()).splitlines() if line.strip()]
            return response.status, lines[-1] if lines else None


async def wait_staged(node: Any, sha512: str, seconds: float = 60) -> Any:
    """The node's record of ``sha512`` once staged (fails on refusal or timeout)."""
    for _ in range(int(seconds / 0.1)):
        record = await node.state.get(sha512)
        if record is not None and record.state == "staged":
            return record
        if record is not None and record.state == "refused":
            raise AssertionError(f"image refused: {record.reason}")
        await asyncio.sleep(0.1)
    raise AssertionError(f"image {sha512[:16]} not staged within {seconds} s")


async def wait_settled(node: Any, sha512: str, seconds: float = 60) -> Any:
    """The node's record of ``sha512`` once its job ended (staged, refused or failed)."""
    for _ in range(int(seconds / 0.05)):
        record = await node.state.get(sha512)
        if record is not None and record.state != "fetching" and sha512 not in node.jobs:
            return record
        await asyncio.sleep(0.05)
    raise AssertionError(f"image {sha512[:16]}: no result within {seconds} s")


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Any:
    """A tmpfs of ``size`` mounted at ``path`` (user xattrs work on tmpfs since Linux 6.6):
    a disk that fills up. Skips the test where nothing can be mounted."""
    path.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {result.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


NODECACHE = [sys.executable, "-m", "nodecache.cli"]


class NodeProcess:
    """A node daemon as its own process (``nodecache -c FILE run``), for SIGKILL tests."""

    def __init__(self, config: Any, directory: Path) -> None:
        self.config = config
        self.path = directory / "node.toml"
        self.path.write_text(node_toml(config))
        self.log = directory / "node.log"
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> NodeProcess:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([*NODECACHE, "-c", str(self.path), "run"], stderr=log,
                                         stdout=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 60  # a killed daemon's socket file may still be there: wait for an answer
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                await self.get("/status")
                return self
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)
        raise AssertionError("the node daemon did not open its socket")

    def kill(self, group: bool = False) -> None:
        """SIGKILL the daemon; ``group``: its children too (qemu-img, lvm), as systemd's
        default KillMode does."""
        assert self.proc is not None
        if group:
            os.killpg(self.proc.pid, signal.SIGKILL)
        else:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(15)

    async def get(self, path: str) -> Any:
        connector = aiohttp.UnixConnector(path=str(self.config.socket_path))
        async with aiohttp.ClientSession(connector=connector) as session, session.get(f"http://node{path}") as r:
            return await (r.json() if path == "/status" else r.text())

    async def until_staged(self, sha: str, seconds: float = 90, every: float = 0.1) -> dict[str, Any]:
        """The daemon's status of ``sha`` once staged, asked ``every`` seconds (each answer runs
        ``vgs`` on the LVM backend: under TCG, ask less often)."""
        for _ in range(int(seconds / every)):
            images = {i["sha512"]: i for i in (await self.get("/status"))["images"]}
            if images.get(sha, {}).get("state") == "staged":
                return images[sha]
            await asyncio.sleep(every)
        raise AssertionError(f"not staged in {seconds} s: {self.log.read_text()[-3000:]}")
