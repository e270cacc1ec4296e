"""The provisioning shim end to end: a node daemon with a staged image, VMs created on
copy-on-write disks through its API and ``vmprov``, started by libvirt (its
``test:///default`` driver) or by a real qemu-system (TCG, paused), destroyed without a
trace. Every refusal leaves no overlay, ISO, snapshot, reference or domain behind."""

from __future__ import annotations

import asyncio
import grp
import json
import os
import shutil
import stat
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from support import (
    NodeProcess,
    node_api,
    node_config,
    publish_and_wait,
    running_node,
    small_tmpfs,
    wait_staged,
    write_image,
)

from nodecache.config import ProvisionConfig, Selection
from nodecache.provision.context import read_iso
from vmic.pki import KeyPaths

VMPROV = ["python", "-m", "nodecache.provision.cli"]


async def vmprov(socket: Path, *args: str) -> subprocess.CompletedProcess[str]:
    import sys

    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "nodecache.provision.cli", "--socket",
                                                str(socket), *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await proc.communicate()
    return subprocess.CompletedProcess(args, proc.returncode or 0, out.decode(), err.decode())


async def staged_node(catalogue: Any, keys: KeyPaths, tmp_path: Path, provision: ProvisionConfig,
                      **overrides: Any) -> AsyncIterator[tuple[Any, dict[str, Any]]]:
    config = node_config(tmp_path / "node", catalogue.url, keys, provision=provision, **overrides)
    record, _ = await publish_and_wait(catalogue, write_image(tmp_path / "golden.raw", 4 * 2**20), os="Debian")
    async with running_node(config) as node:
        await node.refresh()
        await wait_staged(node, record["sha512"])
        yield node, record


@pytest.fixture
async def libvirt_node(catalogue: Any, keys: KeyPaths, tmp_path: Path) -> AsyncIterator[tuple[Any, dict[str, Any]]]:
    pytest.importorskip("libvirt", reason="libvirt-python is not installed")
    async for pair in staged_node(catalogue, keys, tmp_path, ProvisionConfig(hypervisor="libvirt",
                                                                             libvirt_uri="test:///default")):
        yield pair


@pytest.fixture
async def qemu_node(catalogue: Any, keys: KeyPaths, tmp_path: Path,
                    monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Any, dict[str, Any]]]:
    """qemu started directly, each VM in a systemd scope of its own. systemd is not PID 1
    here, so ``systemd-run`` is a stand-in that notes what it was asked and runs the
    command (what systemd-run --scope does, minus the cgroup)."""
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("qemu-system-x86_64 is not installed")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "systemd-run").write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {tmp_path / "scopes"}\n'
                                         'while [ "$1" != "--" ]; do shift; done; shift; exec "$@"\n')
    (bin_dir / "systemd-run").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    provision = ProvisionConfig(hypervisor="qemu", default_memory=64, vm_scope="systemd")
    async for pair in staged_node(catalogue, keys, tmp_path, provision):
        yield pair


async def no_leftovers(node: Any) -> None:
    assert await node.provisioner.leaks() == {"files": [], "references": [], "domains": []}
    assert [r.holder for r in await node.state.refs()] == []


async def test_vm_life_cycle_with_libvirt(libvirt_node: tuple[Any, dict[str, Any]], tmp_path: Path) -> None:
    node, image = libvirt_node
    socket = node.config.socket_path
    key = tmp_path / "id.pub"
    key.write_text("ssh-ed25519 AAAAC3Nz demo@example")
    created = await vmprov(socket, "create", "alice/golden", "web-1", "--memory", "256", "--vcpus", "2",
                           "--pin", "0-1", "--ttl", "2h", "--context", "SITE=cern's", "--ssh-key", str(key))
    assert created.returncode == 0, created.stderr
    assert "created web-1 from" in created.stdout

    hypervisor = node.provisioner.hypervisor
    assert await hypervisor.running("web-1")
    xml = await hypervisor.xml("web-1")
    overlay = node.config.vm_dir / "web-1.qcow2"
    base = (await node.state.get(image["sha512"])).location
    assert f"<source file='{overlay}'/>" in xml and f"<source file='{base}'/>" in xml
    assert "<vcpupin vcpu='1' cpuset='1'/>" in xml and "expires" in xml
    xml_file = tmp_path / "domain.xml"
    xml_file.write_text(xml)
    validated = subprocess.run(["virt-xml-validate", str(xml_file), "domain"], capture_output=True, text=True)
    assert validated.returncode == 0, validated.stderr

    info = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json", str(overlay)], capture_output=True,
                                     text=True, check=True).stdout)
    assert info["backing-filename"] == base and info["backing-filename-format"] == "raw"
    assert os.path.getsize(overlay) < 1024 * 1024, "an overlay, not a copy"
    files = read_iso(node.config.vm_dir / "web-1.iso")
    assert json.loads(files["meta-data"])["local-hostname"] == "web-1"
    assert files["authorized_keys"] == b"ssh-ed25519 AAAAC3Nz demo@example\n"
    sourced = subprocess.run(["sh", "-c", 'eval "$(cat)"; printf %s "$SITE"'], input=files["context.sh"],
                             capture_output=True, check=True)
    assert sourced.stdout == b"cern's"

    status, body = await node_api(socket, "POST", "/evict", {"image": image["identifier"]})
    assert status == 409 and "vm:web-1" in body["message"], "the base of a VM is never evicted"

    listing = await vmprov(socket, "list")
    assert "web-1" in listing.stdout and "running" in listing.stdout
    assert (await vmprov(socket, "stop", "web-1")).returncode == 0
    assert not await hypervisor.running("web-1")
    assert (await vmprov(socket, "start", "web-1")).returncode == 0
    assert await hypervisor.running("web-1")

    destroyed = await vmprov(socket, "destroy", "web-1")
    assert destroyed.returncode == 0, destroyed.stderr
    assert not overlay.exists() and not (node.config.vm_dir / "web-1.iso").exists()
    assert "web-1" not in await hypervisor.names()
    await no_leftovers(node)
    assert Path(base).exists(), "the base stays: it is the cache's"


async def test_qemu_opens_the_overlay_on_its_base(qemu_node: tuple[Any, dict[str, Any]]) -> None:
    """A real qemu-system-x86_64 (TCG, paused): the disk it opened is the overlay, and its
    backing chain reaches the staged base; the ISO is its CD-ROM."""
    node, image = qemu_node
    status, body = await node_api(node.config.socket_path, "POST", "/vms",
                             {"image": image["identifier"], "name": "batch-7", "paused": True})
    assert status == 200 and "result" in body, body
    monitor = await node.provisioner.hypervisor.qmp("batch-7")
    try:
        blocks = {b["device"] or b["qdev"]: b for b in await monitor.execute("query-block")}
        state = await monitor.execute("query-status")
    finally:
        await monitor.close()
    assert state["status"] == "prelaunch" or state["running"] is False
    disk = next(b for b in blocks.values() if b.get("inserted", {}).get("drv") == "qcow2")["inserted"]
    base = (await node.state.get(image["sha512"])).location
    assert disk["file"] == str(node.config.vm_dir / "batch-7.qcow2")
    assert disk["image"]["backing-image"]["filename"] == base
    assert disk["image"]["backing-image"]["format"] == "raw"
    cdrom = next(b for b in blocks.values() if b.get("inserted", {}).get("file", "").endswith(".iso"))
    assert cdrom["inserted"]["ro"] is True
    scope = (node.config.cache_dir.parent / "scopes").read_text().split()
    assert scope[:6] == ["--scope", "--quiet", "--collect", "--unit=vmic-vm-batch-7", "--slice=vmic-vms.slice",
                         "--description"], "a scope of its own: not in the node daemon's cgroup"

    status, _ = await node_api(node.config.socket_path, "DELETE", "/vms/batch-7")
    assert status == 200
    assert not await node.provisioner.hypervisor.running("batch-7")
    await no_leftovers(node)


async def test_time_to_live_reaper(libvirt_node: tuple[Any, dict[str, Any]]) -> None:
    node, image = libvirt_node
    status, body = await node_api(node.config.socket_path, "POST", "/vms",
                             {"image": image["identifier"], "name": "short", "ttl": "1s"})
    assert status == 200 and "result" in body
    assert await node.provisioner.reap() == []
    await asyncio.sleep(1.1)
    reaped = await vmprov(node.config.socket_path, "reap")
    assert reaped.stdout.strip() == "reaped 1 VM(s): short"
    await no_leftovers(node)


@pytest.mark.parametrize("case", ["unknown image", "name clash", "bad name", "libvirt refuses", "base vanished"])
async def test_refusals_leave_nothing_behind(libvirt_node: tuple[Any, dict[str, Any]], case: str) -> None:
    node, image = libvirt_node
    socket = node.config.socket_path
    request = {"image": image["identifier"], "name": "vm-1"}
    if case == "unknown image":
        request["image"] = "alice/nothing"
        expected = (404, "unknown_image")
    elif case == "name clash":
        assert (await node_api(socket, "POST", "/vms", request))[0] == 200
        expected = (409, "name_taken")
    elif case == "bad name":
        request["name"] = "../../etc/passwd"
        expected = (400, "bad_request")
    elif case == "libvirt refuses":
        node.provisioner.host_cpus = 10**6  # as if this host had them: libvirt cannot map CPU 20000
        request["pin"] = "20000"
        expected = (502, "hypervisor_refused")
    else:
        base = Path((await node.state.get(image["sha512"])).location)
        os.chmod(base, 0o644)
        base.unlink()  # behind the daemon's back, between staging and use
        expected = (409, "base_vanished")
    status, body = await node_api(socket, "POST", "/vms", request)
    # a refusal within the first moments keeps its HTTP status; a later one ends the stream
    assert body["error"] == expected[1] and status in (expected[0], 200), (status, body)
    if case == "name clash":
        await node.provisioner.destroy("vm-1")
    await no_leftovers(node)


async def test_vm_files_and_node_state_are_private(libvirt_node: tuple[Any, dict[str, Any]]) -> None:
    """An unprivileged local user read DBPASS=... out of a context ISO: VM files and the
    node's state are 0600, their directories 0700 (0711 where a hypervisor running as
    another user must pass through); bases stay readable (0444) for every VM's disk."""
    import stat

    node, image = libvirt_node
    status, _ = await node_api(node.config.socket_path, "POST", "/vms",
                               {"image": image["identifier"], "name": "secret-1", "context": {"DBPASS": "hunter2"}})
    assert status == 200
    config = node.config

    def mode(path: Path) -> int:
        return stat.S_IMODE(path.stat().st_mode)

    assert mode(config.vm_dir / "secret-1.iso") == 0o600 and mode(config.vm_dir / "secret-1.qcow2") == 0o600
    assert mode(config.vm_dir) == 0o711 and mode(config.cache_dir) == 0o711
    assert mode(config.cache_dir / "state.db") == 0o600
    assert all(mode(p) == 0o600 for p in config.cache_dir.glob("state.db-*")), "SQLite's -wal and -shm too"
    assert mode(config.cache_dir / "data") == 0o700 and mode(config.cache_dir / "torrents") == 0o700
    assert mode(Path((await node.state.get(image["sha512"])).location)) == 0o444
    await node.provisioner.destroy("secret-1")
    await no_leftovers(node)


async def test_absurd_requests_are_400_and_leave_nothing(libvirt_node: tuple[Any, dict[str, Any]]) -> None:
    """Deep JSON, Infinity and NaN, a huge pin range: each a 400 with the reason (these were
    500s, an OverflowError, or a daemon grown to 341 MB)."""
    import aiohttp

    node, image = libvirt_node
    bodies = [b"[" * 100_000 + b"]" * 100_000,
              b'{"image": "%s", "name": "vm-1", "ttl": Infinity}' % image["identifier"].encode(),
              b'{"image": "%s", "name": "vm-1", "ttl": NaN}' % image["identifier"].encode(),
              b'{"image": "%s", "name": "vm-1", "ttl": 1e308}' % image["identifier"].encode(),
              b'{"image": "%s", "name": "vm-1", "pin": "0-100000000"}' % image["identifier"].encode()]
    connector = aiohttp.UnixConnector(path=str(node.config.socket_path))
    async with aiohttp.ClientSession(connector=connector) as session:
        for body in bodies:
            async with session.post("http://node/vms", data=body,
                                    headers={"Content-Type": "application/json"}) as response:
                answer = await response.json()
            assert response.status == 400 and answer["error"] == "bad_request", (body[:60], answer)
        async with session.post("http://node/ensure", data=b"[" * 100_000) as response:
            assert response.status == 400
    await no_leftovers(node)


async def test_image_not_allowed_on_this_node(catalogue: Any, keys: KeyPaths, tmp_path: Path) -> None:
    pytest.importorskip("libvirt")
    provision = ProvisionConfig(hypervisor="libvirt", libvirt_uri="test:///default",
                                allow=Selection(os=("Windows",)))
    async for node, image in staged_node(catalogue, keys, tmp_path, provision):
        result = await vmprov(node.config.socket_path, "create", image["identifier"], "vm-1")
        assert result.returncode == 1
        assert result.stderr.strip().startswith("vmprov: error: image alice/golden") and "image_not_allowed" in \
            result.stderr
        await no_leftovers(node)


async def test_disk_full_while_creating_the_overlay(catalogue: Any, keys: KeyPaths, tmp_path: Path) -> None:
    pytest.importorskip("libvirt")
    with small_tmpfs(tmp_path / "vms", "64k") as vm_dir:
        (vm_dir / "filler").write_bytes(b"x" * (64 * 1024 - 4096))
        provision = ProvisionConfig(hypervisor="libvirt", libvirt_uri="test:///default", vm_dir=vm_dir)
        async for node, image in staged_node(catalogue, keys, tmp_path, provision):
            status, body = await node_api(node.config.socket_path, "POST", "/vms",
                                     {"image": image["identifier"], "name": "vm-1"})
            assert body["error"] == "disk_failed" and status in (507, 200), (status, body)
            assert "No space left on device" in body["message"] or "disk full" in body["message"], body
            assert sorted(os.listdir(vm_dir)) == ["filler"], "only the test's own filler"
            assert await node.provisioner.leaks() == {"files": ["filler"], "references": [], "domains": []}


async def test_a_hundred_creates_and_destroys_leak_nothing(libvirt_node: tuple[Any, dict[str, Any]]) -> None:
    node, image = libvirt_node
    provisioner = node.provisioner
    for n in range(20):  # the benchmark does 100; 20 keep the suite short
        vm = provisioner.request({"image": image["identifier"], "name": f"loop-{n % 3}"})
        await provisioner.create(vm)
        await provisioner.destroy(vm.name)
    await no_leftovers(node)


async def test_rebase_after_the_cache_directory_moved(catalogue: Any, keys: KeyPaths, tmp_path: Path) -> None:
    pytest.importorskip("libvirt")
    provision = ProvisionConfig(hypervisor="libvirt", libvirt_uri="test:///default")
    old = tmp_path / "node"
    async for node, image in staged_node(catalogue, keys, tmp_path, provision):
        assert (await node_api(node.config.socket_path, "POST", "/vms",
                          {"image": image["identifier"], "name": "keep"}))[0] == 200
        await node.provisioner.hypervisor.destroy("keep")  # the host reboots: libvirt forgets, the disk stays
    new = tmp_path / "moved" / "node"
    new.parent.mkdir()
    os.rename(old, new)
    config = node_config(new, catalogue.url, keys, provision=provision)
    async with running_node(config) as node:
        overlay = new / "vms" / "keep.qcow2"
        backing = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json", str(overlay)],
                                            capture_output=True, text=True, check=True).stdout)["backing-filename"]
        assert backing.startswith(str(old)), "before: the overlay points at the old place"
        result = await vmprov(config.socket_path, "rebase")
        assert result.stdout.strip() == "rebased 1 overlay(s): keep", result.stderr
        base = (await node.state.get(image["sha512"])).location
        assert base.startswith(str(new))
        check = subprocess.run(["qemu-img", "info", "-U", "--output=json", "--backing-chain", str(overlay)],
                               capture_output=True, text=True, check=True)
        chain = json.loads(check.stdout)
        assert chain[0]["backing-filename"] == base and chain[1]["filename"] == base
        assert (await vmprov(config.socket_path, "start", "keep")).returncode == 0
        assert await node.provisioner.hypervisor.running("keep")
        await node.provisioner.destroy("keep")
        await no_leftovers(node)


async def test_create_stages_a_missing_image_first(catalogue: Any, keys: KeyPaths, tmp_path: Path) -> None:
    """A node that pre-stages nothing: ``create`` fetches and stages the image (with
    progress lines), then starts the VM on it."""
    pytest.importorskip("libvirt")
    config = node_config(tmp_path / "node", catalogue.url, keys, select=Selection(none=True),
                         provision=ProvisionConfig(hypervisor="libvirt", libvirt_uri="test:///default"))
    record, _ = await publish_and_wait(catalogue, write_image(tmp_path / "golden.raw", 3 * 2**20))
    async with running_node(config) as node:
        await node.refresh()
        assert await node.state.images() == []
        lines: list[dict[str, Any]] = []
        vm = await node.provisioner.create(node.provisioner.request({"image": "alice/golden", "name": "vm-1"}),
                                           lines.append)
        assert vm.sha512 == record["sha512"] and (await node.state.get(record["sha512"])).state == "staged"
        assert await node.provisioner.hypervisor.running("vm-1")
        await node.provisioner.destroy("vm-1")
        await no_leftovers(node)


async def test_the_socket_belongs_to_the_configured_group(catalogue: Any, keys: KeyPaths, tmp_path: Path) -> None:
    """A cloud controller's service user reaches the node's API through ``socket_group``."""
    config = node_config(tmp_path / "node", catalogue.url, keys, socket_group="daemon")
    node = await NodeProcess(config, tmp_path).start()
    try:
        info = config.socket_path.stat()
        assert stat.S_IMODE(info.st_mode) == 0o660 and info.st_gid == grp.getgrnam("daemon").gr_gid
    finally:
        node.stop()
