"""The LVM data path on real device-mapper: this host's kernel has none, so one guest
(``tools/guest.py``: Debian's cloud kernel under qemu, the host's root over virtiofs)
runs every test of ``tests/in_guest/`` in one boot, and each is reported here as a test
of its own. A machine without the guest's packages fails here with the command that
installs them (``tools/test`` installs them itself), never a skip."""

from __future__ import annotations

import ast
import os
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IN_GUEST = ROOT / "tests" / "in_guest"
sys.path.insert(0, str(ROOT / "tools"))

from guest import GuestError, run  # noqa: E402

#: the whole guest run (boot, every test, power-off); TCG on two busy cores takes ~2 minutes
TIMEOUT = float(os.environ.get("VMIC_GUEST_TIMEOUT", "900"))


def in_guest_tests() -> list[str]:
    """``module::test`` of every test function in tests/in_guest (read with ast, not imported)."""
    found = []
    for path in sorted(IN_GUEST.glob("test_*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test_"):
                found.append(f"{path.stem}::{node.name}")
    return found


@pytest.fixture(scope="session")
def guest_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str | None]:
    """Boot once; ``module::test`` -> None (passed) or the failure's text."""
    work = tmp_path_factory.mktemp("guest")
    junit = work / "junit.xml"
    command = [sys.executable, "-m", "pytest", str(IN_GUEST), "-p", "no:cacheprovider", "-o", "addopts=",
               "-q", "-rfE", f"--junitxml={junit}", f"--basetemp={work / 'tmp'}", "--rootdir", str(ROOT)]
    try:
        result = run(command, work, disks=("8G", "64M"), memory_mib=3072, timeout=TIMEOUT)
    except GuestError as exc:
        pytest.fail(f"the guest could not run the tests: {exc}", pytrace=False)
    if not junit.is_file():
        pytest.fail(f"the guest ran no tests (exit {result.returncode}):\n{result.output[-4000:]}", pytrace=False)
    outcomes: dict[str, str | None] = {}
    for case in ElementTree.parse(junit).getroot().iter("testcase"):
        key = f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"
        problems = [child for child in case if child.tag in ("failure", "error", "skipped")]
        outcomes[key] = None if not problems else "\n".join(
            f"{p.tag}: {p.get('message', '')}\n{p.text or ''}" for p in problems)
    outcomes["_summary"] = f"guest run: {result.seconds:.0f} s ({result.accel}), exit {result.returncode}"
    return outcomes


@pytest.mark.parametrize("name", in_guest_tests())
def test_in_guest(name: str, guest_results: dict[str, str | None]) -> None:
    assert name in guest_results, f"{name} did not run in the guest ({guest_results['_summary']})"
    problem = guest_results[name]
    assert problem is None, f"{name} in the guest:\n{problem}"
