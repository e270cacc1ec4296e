"""The systemd units (systemd/): each one systemd itself accepts (``systemd-analyze
verify``: keys, values, and the ExecStart program, here the checkout's .venv in place of
/usr/bin, where the package puts them), with the sandboxing each daemon's function allows."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNITS = sorted((ROOT / "systemd").glob("*.service"))
VENV = ROOT / ".venv"


def settings(unit: Path) -> dict[str, str]:
    result = {}
    for line in unit.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            result[key.strip()] = value.strip()
    return result


def test_every_daemon_has_a_unit() -> None:
    assert [u.name for u in UNITS] == ["vmic-catalogue.service", "vmic-nodecache.service", "vmic-seeder.service",
                                       "vmic-tracker.service"]


@pytest.mark.parametrize("unit", UNITS, ids=[u.stem for u in UNITS])
def test_systemd_accepts_the_unit(unit: Path, tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing: apt-get install -y systemd", pytrace=False)
    local = tmp_path / unit.name
    local.write_text(unit.read_text().replace("/usr/bin/", f"{VENV}/bin/"))
    result = subprocess.run(["systemd-analyze", "verify", str(local)], capture_output=True, text=True,
                            env={"SYSTEMD_LOG_LEVEL": "notice", "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"})
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr


@pytest.mark.parametrize("unit", UNITS, ids=[u.stem for u in UNITS])
def test_the_unit_is_sandboxed_and_keeps_its_files_private(unit: Path) -> None:
    values = settings(unit)
    assert values["NoNewPrivileges"] == "yes" and values["PrivateTmp"] == "yes" and values["ProtectHome"] == "yes"
    assert values["ProtectSystem"] in ("full", "strict")
    assert values["UMask"] in ("0077", "0027"), "0027: the catalogue's blobs are read by the seeder's group"
    assert values["ExecStart"].split()[0] in ("/usr/bin/vmic", "/usr/bin/distributor", "/usr/bin/nodecache")
    if unit.stem != "vmic-nodecache":  # root for LVM, device-mapper and the VMs; the others run as nobody
        assert values.get("User") == "vmic" or values.get("DynamicUser") == "yes"
        assert values["CapabilityBoundingSet"] == "" and values["ProtectSystem"] == "strict"
    else:
        assert values["KillMode"] == "process", "a restart of the node daemon must not kill its VMs"
