"""The Debian package (tools/package): built, installed with dpkg, its units accepted by
``systemd-analyze verify`` where they are installed, each unit's ExecStart run once (with a
config of this test in place of /etc/vmic's example) until it answers and stops with exit 0
on SIGTERM, and purged without a trace."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import ENDORSER_DN, free_port

ROOT = Path(__file__).resolve().parent.parent
UNITS = ("vmic-catalogue", "vmic-tracker", "vmic-seeder", "vmic-nodecache")
INSTALLED = [Path("/opt/vmic"), Path("/etc/vmic"), Path("/usr/bin/vmic"), Path("/usr/bin/nodecache"),
             Path("/usr/share/doc/vmic"), *(Path(f"/lib/systemd/system/{u}.service") for u in UNITS)]


def run(*command: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if os.getuid() != 0:
        pytest.skip("installing a package needs root")
    if run("dpkg", "-s", "vmic").returncode == 0:
        pytest.fail("a vmic package is installed on this machine already: this test would replace it", pytrace=False)
    built = run(str(ROOT / "tools" / "package"), str(tmp_path_factory.mktemp("dist")), timeout=900)
    assert built.returncode == 0, built.stderr[-3000:]
    deb = Path(built.stdout.strip().splitlines()[-1])
    result = run("dpkg", "-i", str(deb))
    assert result.returncode == 0, result.stderr
    try:
        yield deb
    finally:
        purged = run("dpkg", "--purge", "vmic")
        assert purged.returncode == 0, purged.stderr
        left = [str(p) for p in INSTALLED if p.exists() or p.is_symlink()]
        assert left == [], f"left after purge: {left}"


def exec_start(unit: str) -> list[str]:
    text = Path(f"/lib/systemd/system/{unit}.service").read_text()
    line = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    return shlex.split(line.removeprefix("ExecStart="))


def test_the_installed_units_verify_and_the_commands_run(installed: Path) -> None:
    result = subprocess.run(["systemd-analyze", "verify", *(f"/lib/systemd/system/{u}.service" for u in UNITS)],
                            capture_output=True, text=True, env={"SYSTEMD_LOG_LEVEL": "notice",
                                                                 "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"})
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr
    for command in ("vmic", "distributor", "nodecache", "vmprov"):
        version = run(f"/usr/bin/{command}", "--version")
        assert version.returncode == 0 and version.stdout.startswith(f"{command} "), version.stderr
    # the shipped examples load; what they name is the operator's to provide, and the check says so
    check = run("/usr/bin/vmic", "config", "check", "-c", "/etc/vmic/catalogue.toml")
    assert check.returncode == 2 and "endorser_cert: /etc/vmic/endorser.pem does not exist" in check.stderr
    check = run("/usr/bin/nodecache", "config", "check", "-c", "/etc/vmic/nodecache.toml")
    assert check.returncode == 2 and "ca: /etc/vmic/ca does not exist" in check.stderr
    assert run("getent", "passwd", "vmic").returncode == 0, "postinst added the catalogue's user"


def wait_answer(url: str, proc: subprocess.Popen[bytes], log: Path, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer: {log.read_text()[-3000:]}")


def test_each_units_exec_start_runs_and_stops_cleanly(installed: Path, tmp_path: Path) -> None:
    keys = run("/usr/bin/vmic", "keys", "init", str(tmp_path / "keys"), "--endorser-dn", ENDORSER_DN)
    assert keys.returncode == 0, keys.stderr
    ports = {name: free_port() for name in ("catalogue", "tracker", "seeder", "seeder_bt", "node_bt", "node")}
    url = f"http://127.0.0.1:{ports['catalogue']}"
    follow = f'url = "{url}"\nca = "{tmp_path / "keys" / "ca"}"\nendorser_dn = "{ENDORSER_DN}"\n'
    configs = {
        "vmic-catalogue": f'[catalogue]\ndata_dir = "{tmp_path / "data"}"\nlisten = "127.0.0.1:{ports["catalogue"]}"\n'
                          f'endorser_cert = "{tmp_path / "keys" / "endorser.pem"}"\n'
                          f'endorser_key = "{tmp_path / "keys" / "endorser.key"}"\n',
        "vmic-tracker": f'[tracker]\nlisten = "127.0.0.1:{ports["tracker"]}"\nstate_file = "{tmp_path / "swarms.json"}"\n'
                        f'[tracker.catalogue]\n{follow}',
        "vmic-seeder": f'[seeder]\nblob_dir = "{tmp_path / "data" / "blobs" / "sha512"}"\nstate_dir = "{tmp_path / "s"}"\n'
                       f'listen = "127.0.0.1:{ports["seeder_bt"]}"\nmetrics_listen = "127.0.0.1:{ports["seeder"]}"\n'
                       f'[seeder.catalogue]\n{follow}',
        "vmic-nodecache": f'[nodecache]\ncache_dir = "{tmp_path / "node"}"\nlisten = "127.0.0.1:{ports["node_bt"]}"\n'
                          f'metrics_listen = "127.0.0.1:{ports["node"]}"\nformat = "raw"\n[[nodecache.catalogue]]\n{follow}',
    }
    answers = {"vmic-catalogue": f"{url}/readyz", "vmic-tracker": f"http://127.0.0.1:{ports['tracker']}/readyz",
               "vmic-seeder": f"http://127.0.0.1:{ports['seeder']}/readyz",
               "vmic-nodecache": f"http://127.0.0.1:{ports['node']}/readyz"}
    running: list[tuple[str, subprocess.Popen[bytes], Path]] = []
    try:
        for unit in UNITS:
            config = tmp_path / f"{unit}.toml"
            config.write_text(configs[unit])
            command = [str(config) if part.startswith("/etc/vmic/") else part for part in exec_start(unit)]
            assert command[0].startswith("/usr/bin/") and str(config) in command
            log = tmp_path / f"{unit}.log"
            proc = subprocess.Popen(command, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
            running.append((unit, proc, log))
            wait_answer(answers[unit], proc, log)  # ready: each follows the catalogue's verified list
        with urllib.request.urlopen(f"http://127.0.0.1:{ports['node']}/metrics", timeout=5) as response:
            assert b'vmic_build_info{daemon="nodecache"' in response.read()
    finally:
        for unit, proc, log in reversed(running):
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0, f"{unit}: {log.read_text()[-2000:]}"
    events = [json.loads(line)["event"] for line in (tmp_path / "vmic-seeder.log").read_text().splitlines()
              if line.startswith("{")]
    assert "seeder.started" in events and "seeder.stopping" in events
