"""One config language: the same idea is spelled the same way in every daemon (listen
addresses, catalogue tables, sizes, durations), old spellings name their new one,
``config check`` exists for each daemon, the shipped examples load, and the reference in
docs/config.rst is the one generated from the config classes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from distributor.cli import tracker_config
from distributor.seeder.daemon import SeederConfig
from nodecache.config import load as load_node
from vmic.catalogue.config import load_catalogue_config
from vmic.catalogue_source import load_follower
from vmic.config import read_toml
from vmic.errors import ConfigError
from vmic.units import parse_duration, parse_listen, parse_size, parse_wait

ROOT = Path(__file__).resolve().parent.parent
CATALOGUE_TABLE = 'url = "https://c.example:8470"\nca = "/ca"\nendorser_dn = "/CN=e"\n'
COMMANDS = {"catalogue": [sys.executable, "-m", "vmic.cli.main"], "distributor": [sys.executable, "-m", "distributor.cli"],
            "nodecache": [sys.executable, "-m", "nodecache.cli"]}


@pytest.mark.parametrize("text, expected", [
    (4096, 4096), ("4096", 4096), ("64M", 64 * 2**20), ("1.5G", 3 * 2**29), ("2GiB", 2 * 2**30), ("10k", 10240),
    ("0", 0), (" 3 T ", 3 * 2**40),
])
def test_sizes(text: Any, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "M", "-1", "1X", "1.2.3G", True, "9" * 40, "1e9", "5000P", 2**61])
def test_what_is_not_a_size(text: Any) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


@pytest.mark.parametrize("text, expected", [
    (30, 30.0), ("90s", 90.0), ("5m", 300.0), ("48h", 172800.0), ("7d", 604800.0), ("0.5", 0.5), (2.5, 2.5),
])
def test_durations(text: Any, expected: float) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "0", "-5s", "5 min", "1w", float("nan"), float("inf"), "3651d", False])
def test_what_is_not_a_duration(text: Any) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_a_wait_may_be_zero_and_nothing_less() -> None:
    assert parse_wait(0) == parse_wait("0s") == 0.0 and parse_wait("2m") == 120.0
    for text in ("-1", False, "soon"):
        with pytest.raises(ValueError):
            parse_wait(text)


@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1:8470", ("127.0.0.1", 8470)), ("[::1]:80", ("::1", 80)), (":6881", ("0.0.0.0", 6881)),
    ("images.example.org:443", ("images.example.org", 443)), ("0.0.0.0:0", ("0.0.0.0", 0)),
])
def test_listen_addresses(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["8470", "host", "::1:80", "h:70000", "h:-1", "a b:1", "h:1\n"])
def test_what_is_not_a_listen_address(text: str) -> None:
    with pytest.raises(ValueError):
        parse_listen(text)


def load(daemon: str, text: str, tmp_path: Path) -> Any:
    path = tmp_path / f"{daemon}.toml"
    path.write_text(text)
    if daemon == "catalogue":
        return load_catalogue_config(path, env={})
    if daemon == "tracker":
        return tracker_config(path)
    if daemon == "seeder":
        return load_follower(SeederConfig, "seeder", read_toml(path)["seeder"], env={})
    return load_node(path, env={})


SEEDER = f'[seeder]\nblob_dir = "/b"\nstate_dir = "/s"\n[seeder.catalogue]\n{CATALOGUE_TABLE}'
TRACKER = f"[tracker]\n[tracker.catalogue]\n{CATALOGUE_TABLE}"
NODE = f'[nodecache]\ncache_dir = "/c"\n[[nodecache.catalogue]]\n{CATALOGUE_TABLE}'
CATALOGUE = '[catalogue]\ndata_dir = "/d"\n'


@pytest.mark.parametrize("daemon, text", [
    ("catalogue", CATALOGUE.replace("\n", '\nlisten = "[::1]:9000"\nmax_upload_bytes = "2G"\nlist_lifetime = "2d"\n', 1)),
    ("tracker", TRACKER.replace("\n", '\nlisten = "[::1]:9000"\ninterval = "2m"\n', 1)),
    ("seeder", SEEDER.replace("\n", '\nlisten = "[::1]:9000"\nupload_limit = "2G"\npoll_interval = "2d"\n', 1)),
    ("nodecache", NODE.replace("\n", '\nlisten = "[::1]:9000"\nupload_limit = "2G"\npoll_interval = "2d"\n', 1)),
])
def test_the_same_idea_is_spelled_the_same_in_every_daemon(daemon: str, text: str, tmp_path: Path) -> None:
    config = load(daemon, text, tmp_path)
    assert config.listen == "[::1]:9000"
    for name in ("max_upload_bytes", "upload_limit"):
        if hasattr(config, name) and f"{name} =" in text:
            assert getattr(config, name) == 2 * 2**30
    for name in ("list_lifetime", "poll_interval"):
        if f"{name} =" in text:
            assert getattr(config, name) == 2 * 86400.0
    if daemon == "tracker":
        assert config.interval == 120.0
    if daemon != "catalogue":  # every follower: the same catalogue table, tls_ca included
        sources = config.catalogues if daemon == "nodecache" else (config.catalogue,)
        assert [(s.url, str(s.ca), s.endorser_dn) for s in sources] == [("https://c.example:8470", "/ca", "/CN=e")]


@pytest.mark.parametrize("daemon, text, message", [
    ("catalogue", CATALOGUE + "port = 8470\n", 'port is now spelled listen = "HOST:PORT"'),
    ("catalogue", CATALOGUE + "list_lifetime_hours = 2\n", 'list_lifetime_hours is now spelled list_lifetime'),
    ("tracker", "[tracker]\ncatalogue_url = \"http://x\"\n", "catalogue_url is now spelled url in the catalogue table"),
    ("tracker", "[tracker]\n", r"\[tracker.catalogue\] is missing"),
    ("seeder", SEEDER.replace("[seeder]\n", "[seeder]\npoll_seconds = 5\n"), "poll_seconds is now spelled poll_interval"),
    ("nodecache", NODE.replace("\n", "\nretry_seconds = 5\n", 1), "retry_seconds is now spelled retry_after"),
    ("nodecache", NODE.replace("\n", "\nposition = 1\npoll_interval = 0\n", 1), "unknown setting"),
    ("nodecache", NODE.replace("\n", "\npoll_interval = 0\n", 1), "poll_interval: 0 is not a positive duration"),
    ("nodecache", NODE.replace("\n", '\nupload_limit = "5 parsecs"\n', 1), r"\[nodecache\] upload_limit: '5 parsecs'"),
    ("seeder", SEEDER.replace("[seeder]\n", '[seeder]\nupload_limit = "lots"\n'), "upload_limit: 'lots' is not a size"),
    ("tracker", TRACKER.replace("[tracker]\n", '[tracker]\ninterval = "soon"\n'), "interval: 'soon' is not a duration"),
    ("catalogue", CATALOGUE + 'listen = "8470"\n', "listen: '8470' is not host:port"),
    ("nodecache", NODE + 'tls_ca = "/x"\ncolour = 1\n', r"#1: unknown setting\(s\) colour"),
    ("seeder", SEEDER.replace("https://", "ftp://"), "must start with http:// or https://"),
])
def test_a_wrong_or_old_spelling_says_what_to_write(daemon: str, text: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=message):
        load(daemon, text, tmp_path)


@pytest.mark.parametrize("example, daemon", [("catalogue.toml", "catalogue"), ("distributor.toml", "tracker"),
                                              ("distributor.toml", "seeder"), ("nodecache.toml", "nodecache")])
def test_the_shipped_examples_load(example: str, daemon: str, tmp_path: Path) -> None:
    config = load(daemon, (ROOT / "etc" / example).read_text(), tmp_path)
    assert config.log_level == "info"


def run(daemon: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*COMMANDS[daemon], *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("daemon", ["catalogue", "distributor", "nodecache"])
def test_config_check_names_the_first_missing_file_and_starts_nothing(daemon: str, tmp_path: Path) -> None:
    ca = tmp_path / "ca"
    ca.mkdir()
    table = CATALOGUE_TABLE.replace('"/ca"', f'"{ca}"')
    text = {
        "catalogue": f'[catalogue]\ndata_dir = "{tmp_path / "data"}"\ntls_cert = "{tmp_path / "tls.pem"}"\n',
        "distributor": f'[tracker]\n[tracker.catalogue]\n{table}[seeder]\nblob_dir = "{tmp_path}"\n'
                       f'state_dir = "{tmp_path / "s"}"\n[seeder.catalogue]\n{table}tls_ca = "{tmp_path / "tls-ca.pem"}"\n',
        "nodecache": f'[nodecache]\ncache_dir = "{tmp_path / "cache"}"\n[[nodecache.catalogue]]\n{table}'
                     f'tls_ca = "{tmp_path / "tls-ca.pem"}"\n',
    }[daemon]
    config = tmp_path / "x.toml"
    config.write_text(text)
    first = "endorser_cert" if daemon == "catalogue" else "tls_ca"  # the catalogue: its default under data_dir
    result = run(daemon, "config", "check", "-c", str(config))
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert f"{first}: {tmp_path}" in result.stderr and "does not exist" in result.stderr
    for name in ("tls.pem", "tls-ca.pem"):
        (tmp_path / name).write_text("x")
    if daemon == "catalogue":
        assert "(and 2 more)" in result.stderr  # endorser_key, tls_cert
        result = run(daemon, "-c", str(config), "config", "check")
        assert result.returncode == 2 and "endorser_cert" in result.stderr and "(and 1 more)" in result.stderr
        (tmp_path / "data" / "keys").mkdir(parents=True)
        for name in ("endorser.pem", "endorser.key"):
            (tmp_path / "data" / "keys" / name).write_text("x")
        config.write_text(text + f'tls_key = "{tmp_path / "tls.pem"}"\n')
    result = run(daemon, "config", "check", "-c", str(config))
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr
    assert not (tmp_path / "cache").exists() and not (tmp_path / "s").exists(), "a check creates nothing"
    assert not (tmp_path / "data" / "catalogue.sqlite").exists()


def test_the_config_reference_is_generated_from_the_config_classes() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "config_reference.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr + result.stdout
