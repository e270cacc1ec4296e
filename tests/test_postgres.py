"""PostgreSQL as the metadata store, on a real server this test starts (loopback only)."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator
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


@pytest.fixture(scope="module")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
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
    subprocess.run([*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(base / "log"),
                    "-w", "start"], check=True, capture_output=True)
    try:
        yield f"postgresql://vmic@127.0.0.1:{port}"
    finally:
        subprocess.run([*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)


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
