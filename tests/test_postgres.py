"""PostgreSQL as the metadata store, on a real server this test starts (loopback only)."""

from __future__ import annotations

import asyncio
import glob
import os
import pwd
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from support import ENDORSER_DN, free_port, identities, start_catalogue, upload_request, write_image

from vmic.imagelist.policy import History, Subscription
from vmic.imagelist.verify import verify_signed_list
from vmic.pki import KeyPaths

pytestmark = pytest.mark.postgres


def _bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


@dataclass
class PostgresServer:
    url: str
    pg_ctl: list[str]  #: pg_ctl -D DATA, as the server's user

    def stop(self) -> None:
        subprocess.run([*self.pg_ctl, "-m", "immediate", "stop"], capture_output=True, check=True)

    def start(self) -> None:
        subprocess.run([*self.pg_ctl, "-w", "start"], capture_output=True, check=True)


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    bindir = _bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server is not installed (tools/test installs it: apt-get install postgresql)")
    base = tmp_path_factory.mktemp("postgres")
    data = base / "data"
    run_as: list[str] = []
    if os.getuid() == 0:  # the server refuses to run as root
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server as")
        os.chmod(base, 0o755)
        for parent in base.parents:
            if str(parent).startswith(str(tmp_path_factory.getbasetemp().parent)):
                os.chmod(parent, os.stat(parent).st_mode | 0o005)
        shutil.chown(base, user.pw_uid, user.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    subprocess.run([*run_as, str(bindir / "initdb"), "-D", str(data), "--auth=trust", "-U", "vmic", "-E", "UTF8"],
                   check=True, capture_output=True)
    options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
    server = PostgresServer(f"postgresql://vmic@127.0.0.1:{port}", [
        *run_as, str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(base / "log")])
    server.start()
    try:
        yield server
    finally:
        subprocess.run([*server.pg_ctl, "-m", "immediate", "stop"], capture_output=True)


@pytest.fixture(scope="module")
def postgres_server(postgres: PostgresServer) -> str:
    return postgres.url


@pytest.fixture
async def database_url(postgres_server: str, request: pytest.FixtureRequest) -> str:
    name = "t_" + request.node.name.lower().replace("[", "_").replace("]", "")[:50]
    conn = await asyncpg.connect(f"{postgres_server}/postgres")
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return f"{postgres_server}/{name}"


async def test_publish_revoke_and_restart_on_postgres(catalogue_factory, database_url: str, keys: KeyPaths,  # type: ignore[no-untyped-def]
                                                      tmp_path: Path) -> None:
    catalogue = await catalogue_factory(database=database_url)
    image_file = write_image(tmp_path / "a.raw", 2 * 2**20)
    async with catalogue.client() as client:
        first = await client.upload(image_file, upload_request(image_file, version="1"))
        second = await client.upload(image_file, upload_request(image_file, version="2"))
        await client.revoke(first["identifier"])
        message = (await client.fetch("/imagelist")).body
    image_list = await verify_signed_list(message, [keys.ca_dir], Subscription(endorser_dn=ENDORSER_DN))
    assert [i.identifier for i in image_list.images] == [second["identifier"]]
    assert not (catalogue.config.data_dir / "catalogue.sqlite").exists(), "metadata went to PostgreSQL, not SQLite"

    await catalogue.stop()
    catalogue.stop = _noop  # type: ignore[method-assign]
    restarted = await start_catalogue(catalogue.config)
    try:
        async with restarted.client(None) as client:
            again = await verify_signed_list((await client.fetch("/imagelist")).body, [keys.ca_dir],
                                             Subscription(endorser_dn=ENDORSER_DN, list_identifier=image_list.identifier),
                                             History(last_version=image_list.version))
        assert identities(again.images) == identities(image_list.images) and again.version > image_list.version
    finally:
        await restarted.stop()


async def test_two_catalogue_instances_on_one_database_publish_a_version_once(catalogue_factory, database_url: str,  # type: ignore[no-untyped-def]
                                                                             tmp_path: Path) -> None:
    import asyncio

    from vmic.errors import RemoteError

    data_dir = tmp_path / "shared-data"  # shared blob store, as on a shared filesystem
    one = await catalogue_factory(database=database_url, data_dir=data_dir)
    two = await catalogue_factory(database=database_url, data_dir=data_dir)
    files = [write_image(tmp_path / f"{n}.raw", 2**20, seed=n) for n in (1, 2)]

    async def publish(catalogue, path):  # type: ignore[no-untyped-def]
        async with catalogue.client() as client:
            return await client.upload(path, upload_request(path, version="7"))

    results = await asyncio.gather(publish(one, files[0]), publish(two, files[1]), return_exceptions=True)
    errors = [r for r in results if isinstance(r, Exception)]
    assert len(errors) == 1 and isinstance(errors[0], RemoteError) and errors[0].status == 409
    records = await one.catalogue.store.images()
    assert len(records) == 1
    await two.catalogue.listing.refresh()
    assert [i.identifier for i in two.catalogue.listing.current.image_list.images] == [records[0].identifier]


async def _noop() -> None:
    return None


async def test_a_database_outage_is_a_503_and_sigterm_after_it_is_exit_0(postgres: PostgresServer, database_url: str,
                                                                       keys: KeyPaths, tmp_path: Path) -> None:
    """The database goes away under a running catalogue and comes back: requests in between
    get a clear error (never a hang), the catalogue serves again by itself, and a SIGTERM
    afterwards is a clean exit 0 (systemd must not mark the unit failed)."""
    import aiohttp
    from support import TOKENS, CatalogueProcess, make_config, sha512, until

    from vmic.client import CatalogueClient
    from vmic.errors import RemoteError

    image = write_image(tmp_path / "a.raw", 2**20)
    password = tmp_path / "db-password"
    password.write_text("s3cret-not-printed\n")  # trust auth here: read and passed, never shown
    config = make_config(tmp_path / "data", keys, database=database_url, database_password_file=password)
    catalogue = CatalogueProcess(config, tmp_path / "vmic.toml")
    catalogue.config_path.write_text(catalogue.config_path.read_text().replace(
        "[catalogue]\n", f'[catalogue]\ndatabase_password_file = "{password}"\n', 1))
    catalogue.start()
    url = f"http://127.0.0.1:{config.port}"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            async with http.get(f"{url}/api/v1/images") as response:
                assert response.status == 200
            postgres.stop()
            try:
                async with http.get(f"{url}/api/v1/images") as response:
                    assert response.status in (500, 503) and "error" in await response.json()
                async with http.get(f"{url}/readyz") as response:
                    assert response.status == 503
                async with CatalogueClient(url, TOKENS["alice"]) as client:
                    with pytest.raises(RemoteError):
                        await client.upload(image, upload_request(image))
                # the subscription loop (once killed for good by this) meets the outage too
                await until(lambda: "subscription.schedule_failed" in catalogue.log.read_text(),
                            "the subscription loop to meet the outage")
            finally:
                postgres.start()
            for _ in range(200):  # the pool reconnects by itself
                async with http.get(f"{url}/api/v1/images") as response:
                    if response.status == 200:
                        break
                await asyncio.sleep(0.1)
            assert response.status == 200
        async with CatalogueClient(url, TOKENS["alice"]) as client:  # writes work again too
            record = await client.upload(image, upload_request(image))
        assert record["sha512"] == sha512(image)
        assert catalogue.proc is not None
        catalogue.proc.send_signal(signal.SIGTERM)
        assert catalogue.proc.wait(30) == 0, catalogue.log.read_text()[-3000:]
        assert "s3cret" not in catalogue.log.read_text()
        assert "background.crashed" not in catalogue.log.read_text()
    finally:
        catalogue.stop()


async def test_a_start_on_a_taken_port_signs_nothing(database_url: str, keys: KeyPaths, tmp_path: Path) -> None:
    """A start that cannot listen stops before the database is touched: no list signed,
    one line on stderr, exit 1."""
    import socket as sockets

    from support import VMIC, config_toml, make_config

    config = make_config(tmp_path / "data", keys, database=database_url)
    (tmp_path / "vmic.toml").write_text(config_toml(config))
    with sockets.socket() as taken:
        taken.bind(("127.0.0.1", config.port))
        taken.listen()
        proc = await asyncio.create_subprocess_exec(*VMIC, "serve", "-c", str(tmp_path / "vmic.toml"),
                                                    stderr=asyncio.subprocess.PIPE)
        _, err = await proc.communicate()
    assert proc.returncode == 1 and err.decode().count("\n") == 1 and "in use" in err.decode(), err
    conn = await asyncpg.connect(database_url)
    try:
        tables = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    finally:
        await conn.close()
    assert tables == [], "nothing was created, nothing signed"
