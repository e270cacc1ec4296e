"""Where VMs run: libvirt (any URI; ``test:///default`` in tests), or qemu-system
started directly where there is no libvirt.

Both take the same :class:`~.domain.DomainSpec`. libvirt defines the domain from
:func:`~.domain.domain_xml` and starts it; its blocking calls run in a thread. The qemu
hypervisor starts ``qemu-system-x86_64`` daemonized (it outlives the node daemon, like
a libvirt domain), with a QMP socket, a pid file and the serial console in a log, in
``<run_dir>/<name>.*``; KVM where ``/dev/kvm`` exists, else TCG; CPU pinning with
``taskset``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path
from typing import Any, Protocol

from ..tools import run
from .domain import DomainSpec, domain_xml
from .errors import HypervisorRefused
from .qmp import Qmp


class Hypervisor(Protocol):
    domain_type: str

    async def start(self, spec: DomainSpec, paused: bool = False) -> None: ...

    async def stop(self, name: str) -> None:
        """Power off (the domain stays defined; its disk stays)."""

    async def destroy(self, name: str) -> None:
        """Stop if running and forget the domain entirely (idempotent)."""

    async def running(self, name: str) -> bool: ...

    async def names(self) -> set[str]:
        """Every domain this hypervisor knows (to find leaks)."""


class LibvirtHypervisor:
    def __init__(self, uri: str) -> None:
        import libvirt  # the binding needs libvirt's C library: imported only where used

        self.libvirt = libvirt
        libvirt.registerErrorHandler(lambda *_: None, None)  # errors come back as exceptions, not stderr
        self.uri = uri
        self.connection = libvirt.open(uri)
        self.domain_type = "test" if uri.startswith("test:") else "kvm" if os.path.exists("/dev/kvm") else "qemu"

    async def _call(self, function: Any, *args: Any) -> Any:
        try:
            return await asyncio.to_thread(function, *args)
        except self.libvirt.libvirtError as exc:
            raise HypervisorRefused(f"libvirt: {exc.get_error_message()}") from None

    def _lookup(self, name: str) -> Any:
        try:
            return self.connection.lookupByName(name)
        except self.libvirt.libvirtError:
            return None

    async def start(self, spec: DomainSpec, paused: bool = False) -> None:
        domain = await self._call(self.connection.defineXML, domain_xml(spec))
        try:
            await self._call(domain.createWithFlags, self.libvirt.VIR_DOMAIN_START_PAUSED if paused else 0)
        except HypervisorRefused:
            await self._call(domain.undefine)
            raise

    async def stop(self, name: str) -> None:
        domain = self._lookup(name)
        if domain is not None and domain.isActive():
            await self._call(domain.destroy)

    async def destroy(self, name: str) -> None:
        domain = self._lookup(name)
        if domain is None:
            return
        if domain.isActive():
            await self._call(domain.destroy)
        await self._call(domain.undefine)

    async def running(self, name: str) -> bool:
        domain = self._lookup(name)
        return bool(domain is not None and domain.isActive())

    async def names(self) -> set[str]:
        return {d.name() for d in await self._call(self.connection.listAllDomains)}

    async def xml(self, name: str) -> str:
        domain = self._lookup(name)
        return str(domain.XMLDesc()) if domain is not None else ""


#: the slice that holds every VM's scope (systemd), beside the node daemon's service
VM_SLICE = "vmic-vms.slice"


def scoped(command: list[str], name: str) -> list[str]:
    """``command`` run in a transient systemd scope of its own, ``vmic-vm-<name>.scope`` in
    :data:`VM_SLICE`: the VM's qemu is then in no cgroup of the node daemon's, and a restart
    or stop of the daemon's service leaves it running."""
    return ["systemd-run", "--scope", "--quiet", "--collect", f"--unit=vmic-vm-{name}", f"--slice={VM_SLICE}",
            "--description", f"vmic VM {name}", "--", *command]


class QemuHypervisor:
    def __init__(self, run_dir: Path, qemu: str = "qemu-system-x86_64", own_scope: bool = False) -> None:
        """``own_scope``: start each VM in a systemd scope of its own (where systemd runs
        the host: decided by the composition root)."""
        self.run_dir = run_dir
        self.qemu = qemu
        self.own_scope = own_scope
        self.domain_type = "kvm" if os.path.exists("/dev/kvm") else "qemu"

    def files(self, name: str) -> dict[str, Path]:
        return {kind: self.run_dir / f"{name}.{kind}" for kind in ("pid", "qmp", "console")}

    def command(self, spec: DomainSpec, paused: bool) -> list[str]:
        files = self.files(spec.name)
        accel = "kvm" if self.domain_type == "kvm" else "tcg"
        def path(value: str) -> str:  # qemu option values escape "," as ",,"
            return value.replace(",", ",,")

        disk = (f"file={path(spec.disk)},format=qcow2,if=virtio,discard=unmap" if spec.disk_type == "file"
                else f"file={path(spec.disk)},format=raw,if=virtio,cache=none,aio=native")
        command = [self.qemu, "-name", spec.name, "-uuid", spec.uuid, "-machine", f"pc,accel={accel}",
                   "-m", str(spec.memory_mib), "-smp", str(spec.vcpus), "-nodefaults", "-display", "none",
                   "-daemonize", "-pidfile", str(files["pid"]),
                   "-qmp", f"unix:{files['qmp']},server=on,wait=off",
                   "-serial", f"file:{files['console']}",
                   "-drive", disk,
                   "-drive", f"file={path(spec.iso)},format=raw,media=cdrom,readonly=on"]
        if paused:
            command.append("-S")
        if spec.pin:
            command = ["taskset", "-c", ",".join(map(str, spec.pin)), *command]
        return scoped(command, spec.name) if self.own_scope else command

    def _pid(self, name: str) -> int | None:
        try:
            pid = int(self.files(name)["pid"].read_text().strip())
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError):
            return None

    async def start(self, spec: DomainSpec, paused: bool = False) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self._pid(spec.name) is not None:
            raise HypervisorRefused(f"qemu: a VM named {spec.name} is already running")
        for path in self.files(spec.name).values():
            path.unlink(missing_ok=True)
        command = self.command(spec, paused)
        await run(command[0], *command[1:], error=HypervisorRefused)

    async def qmp(self, name: str) -> Qmp:
        return await Qmp.connect(self.files(name)["qmp"])

    async def stop(self, name: str) -> None:
        pid = self._pid(name)
        if pid is None:
            return
        with contextlib.suppress(OSError, HypervisorRefused, asyncio.TimeoutError):
            monitor = await self.qmp(name)
            with contextlib.suppress(HypervisorRefused, ConnectionError):
                await monitor.execute("quit")
            await monitor.close()
        for _ in range(100):
            if self._pid(name) is None:
                break
            await asyncio.sleep(0.05)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    async def destroy(self, name: str) -> None:
        await self.stop(name)
        for path in self.files(name).values():
            path.unlink(missing_ok=True)

    async def running(self, name: str) -> bool:
        return self._pid(name) is not None

    async def names(self) -> set[str]:
        if not self.run_dir.is_dir():
            return set()
        return {p.stem for p in self.run_dir.glob("*.pid")}
