"""The ``vmic`` command as a user runs it: real subprocesses against a real catalogue."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from support import CA_DN, ENDORSER_DN, TOKENS, VMIC, RunningCatalogue, write_image

from vmic.catalogue.config import hash_token, load_catalogue_config
from vmic.pki import KeyPaths


async def vmic(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(*VMIC, *args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE, env={**os.environ, **(env or {})})
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


def one_line_error(err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("vmic: error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def publish_args(path: Path, catalogue: RunningCatalogue, version: str = "1") -> list[str]:
    return ["publish", str(path), "--url", catalogue.url, "--namespace", "alice", "--name", "golden",
            "--version", version, "--os", "Debian", "--title", "Golden"]


async def test_keys_init_and_token_make_a_working_config(tmp_path: Path) -> None:
    rc, out, _ = await vmic("keys", "init", str(tmp_path / "keys"), "--endorser-dn", "/C=CH/O=x/CN=e")
    assert rc == 0 and "endorser.pem" in out
    assert oct((tmp_path / "keys" / "endorser.key").stat().st_mode & 0o777) == "0o600"
    rc, out, err = await vmic("token", "carol", "--namespace", "carol", "--namespace", "team")
    token = err.strip().rsplit(" ", 1)[1]
    assert token not in out, "the cleartext token is never where `>> catalogue.toml` would append it"
    (tmp_path / "vmic.toml").write_text(f'[catalogue]\ndata_dir = "{tmp_path}/d"\n' + out)
    config = load_catalogue_config(tmp_path / "vmic.toml")
    (publisher,) = config.publishers
    assert publisher.token_sha256 == hash_token(token) and publisher.namespaces == ("carol", "team")


async def test_publish_list_verify_revoke(catalogue: RunningCatalogue, keys: KeyPaths, tmp_path: Path) -> None:
    image_file = write_image(tmp_path / "golden.raw", 5 * 2**20)
    env = {"VMIC_TOKEN": TOKENS["alice"], "XDG_CACHE_HOME": str(tmp_path / "cache")}
    rc, out, err = await vmic(*publish_args(image_file, catalogue), env=env)
    assert rc == 0, err
    assert "published alice/golden version 1" in out
    identifier = out.strip().rsplit(" ", 1)[1]

    rc, out, _ = await vmic("list", "--url", catalogue.url)
    assert rc == 0 and "alice/golden" in out and "5.0 MiB" in out and identifier in out

    rc, out, err = await vmic("verify", f"{catalogue.url}/imagelist", "--ca", str(keys.ca_dir),
                              "--endorser-dn", ENDORSER_DN, "--endorser-ca", CA_DN)
    assert rc == 0, err
    assert "verified" in out and "1 image(s)" in out

    rc, out, err = await vmic("revoke", identifier, "--url", catalogue.url, env=env)
    assert rc == 0 and "revoked alice/golden version 1" in out
    rc, out, _ = await vmic("list", "--url", catalogue.url, "--json")
    assert rc == 0 and out.strip() == "[]"


async def test_publish_killed_midway_resumes_and_sends_only_the_rest(catalogue: RunningCatalogue,
                                                                     tmp_path: Path) -> None:
    image_file = write_image(tmp_path / "big.raw", 96 * 2**20)
    env = {**os.environ, "VMIC_TOKEN": TOKENS["alice"], "XDG_CACHE_HOME": str(tmp_path / "cache")}
    parts = catalogue.config.data_dir / "uploads"
    proc = await asyncio.create_subprocess_exec(*VMIC, *publish_args(image_file, catalogue), env=env,
                                                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    sent_before_kill = 0
    for _ in range(2000):
        sizes = [p.stat().st_size for p in parts.glob("*.part")]
        if sizes and sizes[0] > 0:
            proc.send_signal(signal.SIGKILL)
            break
        await asyncio.sleep(0.002)
    await proc.wait()
    await asyncio.sleep(0.3)
    sent_before_kill = sum(p.stat().st_size for p in parts.glob("*.part"))
    assert 0 < sent_before_kill < image_file.stat().st_size, "the publish was not interrupted midway"
    assert await catalogue.catalogue.store.images() == []

    received = []
    original = catalogue.catalogue.uploads.patch

    async def counting_patch(publisher, upload_id, offset, chunks, sha512=None):  # type: ignore[no-untyped-def]
        received.append(offset)
        return await original(publisher, upload_id, offset, chunks, sha512)

    catalogue.catalogue.uploads.patch = counting_patch  # type: ignore[method-assign]
    rc, out, err = await vmic(*publish_args(image_file, catalogue), env=env)
    assert rc == 0, err
    assert received and received[0] >= sent_before_kill > 0, "resumed from the stored offset, not from 0"
    (record,) = await catalogue.catalogue.store.images()
    assert record.sha512 == hashlib.sha512(image_file.read_bytes()).hexdigest()
    assert not list((tmp_path / "cache" / "vmic" / "uploads").iterdir()), "resume state is removed when done"


async def test_a_publish_that_fails_does_not_wait_for_its_hash(tmp_path: Path) -> None:
    # 1 TiB of holes: hashing it would take a quarter of an hour; the error comes at once
    huge = tmp_path / "huge.raw"
    with open(huge, "wb") as out:
        out.truncate(2**40)
    rc, _, err = await asyncio.wait_for(vmic(
        "publish", str(huge), "--url", "http://127.0.0.1:9", "--namespace", "alice", "--name", "golden",
        "--version", "1", env={"VMIC_TOKEN": "x", "XDG_CACHE_HOME": str(tmp_path)}), 120)
    assert rc == 1
    one_line_error(err, "cannot reach")


async def test_cli_errors_are_one_line_with_nonzero_exit(catalogue: RunningCatalogue, keys: KeyPaths,
                                                         other_keys: KeyPaths, tmp_path: Path) -> None:
    image_file = write_image(tmp_path / "a.raw", 4096)
    rc, _, err = await vmic(*publish_args(image_file, catalogue), env={"VMIC_TOKEN": "wrong"})
    assert rc == 1
    one_line_error(err, "unknown or revoked publisher token")

    rc, _, err = await vmic(*publish_args(tmp_path / "missing.raw", catalogue), env={"VMIC_TOKEN": "x"})
    assert rc == 2
    one_line_error(err, "cannot read", "missing.raw")

    rc, _, err = await vmic("list", "--url", "http://127.0.0.1:9")
    assert rc == 1
    one_line_error(err, "cannot reach")

    signed = tmp_path / "list.smime"
    async with catalogue.client(None) as client:
        signed.write_bytes((await client.fetch("/imagelist")).body)
    cases = [
        (["--endorser-dn", "/C=CH/O=someone/CN=else"], "expected endorser"),
        (["--endorser-dn", ENDORSER_DN, "--list-id", "00000000-0000-0000-0000-000000000000"], "not the subscribed"),
        (["--endorser-dn", ENDORSER_DN, "--min-version", "999"], "lower than the last accepted"),
    ]
    for extra, reason in cases:
        rc, _, err = await vmic("verify", str(signed), "--ca", str(keys.ca_dir), *extra)
        assert rc == 1
        one_line_error(err, reason)
    rc, _, err = await vmic("verify", str(signed), "--ca", str(other_keys.ca_dir), "--endorser-dn", ENDORSER_DN)
    assert rc == 1
    one_line_error(err, "does not chain to a trusted CA")
    tampered = tmp_path / "tampered.smime"
    tampered.write_bytes(signed.read_bytes().replace(b'"hv:images": []', b'"hv:images": [ ]'))
    rc, _, err = await vmic("verify", str(tampered), "--ca", str(keys.ca_dir), "--endorser-dn", ENDORSER_DN)
    assert rc == 1
    one_line_error(err, "altered")


async def test_serve_on_every_address_without_public_url_refuses_to_start(tmp_path: Path) -> None:
    """Bound to 0.0.0.0 or :: the catalogue would advertise http://0.0.0.0:8470/... in every
    hv:uri; it refuses to start and says what to set."""
    for listen in ("0.0.0.0:8470", "[::]:8470", ":8470"):
        config = tmp_path / "vmic.toml"
        config.write_text(f'[catalogue]\ndata_dir = "{tmp_path / "data"}"\nlisten = "{listen}"\n')
        rc, _, err = await vmic("serve", "-c", str(config))
        assert rc != 0
        one_line_error(err, "set public_url")
        assert not (tmp_path / "data").exists(), "nothing was started or written"


def test_vmic_console_script_is_installed() -> None:
    result = subprocess.run([str(Path(sys.executable).parent / "vmic"), "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "publish" in result.stdout


@pytest.mark.parametrize("module", ["vmic.cli.main", "nodecache.cli", "nodecache.provision.cli"])
def test_help_imports_nothing_heavy(module: str) -> None:
    """``--help`` of each CLI needs argparse only: the network, crypto, terminal and
    BitTorrent libraries are imported by the commands that use them (start-up time:
    tools/bench/cli_start.py)."""
    probe = (f"import sys, runpy\nsys.argv = ['x', '--help']\n"
             f"try:\n    runpy.run_module({module!r}, run_name='__main__')\nexcept SystemExit:\n    pass\n"
             "print(sorted({n.split('.')[0] for n in sys.modules} & {'aiohttp', 'rich', 'cryptography', "
             "'libtorrent', 'aiosqlite', 'asyncpg', 'prometheus_client', 'sh', 'xattr', 'zstandard', 'pycdlib', "
             "'libvirt'}), file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert "usage:" in result.stdout and result.stderr.strip().splitlines()[-1] == "[]", result.stderr


@pytest.mark.parametrize("command", ["vmic", "nodecache", "vmprov", "distributor"])
def test_every_command_says_its_version(command: str) -> None:
    result = subprocess.run([str(Path(sys.executable).parent / command), "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and re.fullmatch(rf"{command} \d+\.\d+\.\d+\n", result.stdout), result


def test_a_wrong_log_level_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text(f'[nodecache]\ncache_dir = "{tmp_path}/cache"\nlog_level = "loud"\n')
    result = subprocess.run([str(Path(sys.executable).parent / "nodecache"), "-c", str(config), "run"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0, result.stderr
    assert "log_level must be one of" in result.stderr


@pytest.mark.parametrize("command, subcommand", [("vmic", "serve"), ("distributor", "tracker"),
                                                 ("distributor", "seeder"), ("nodecache", "status"),
                                                 ("vmprov", "list")])
def test_the_config_option_goes_before_or_after_the_subcommand(command: str, subcommand: str,
                                                               tmp_path: Path) -> None:
    config = tmp_path / "broken.toml"
    config.write_text("[unclosed\n")
    program = str(Path(sys.executable).parent / command)
    before = subprocess.run([program, "-c", str(config), subcommand], capture_output=True, text=True, timeout=60)
    after = subprocess.run([program, subcommand, "-c", str(config)], capture_output=True, text=True, timeout=60)
    assert before.returncode == after.returncode == 2, (before.stderr, after.stderr)
    assert before.stderr == after.stderr and str(config) in before.stderr
