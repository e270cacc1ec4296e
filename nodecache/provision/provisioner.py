"""The shim itself: VMs from staged images, every step undone if a later one fails.

    create:  name free? -> image listed and allowed? -> staged (ensure: fetch now if
             needed) -> reference on the base (so eviction keeps it) -> base still there?
             -> copy-on-write disk -> contextualization ISO -> domain started -> record
    destroy: domain gone -> disk and ISO removed -> reference dropped -> record dropped

Nothing here copies an image: the disk is an overlay or a snapshot, made in constant
time whatever the image's size. A VM's reference on its base is its holder name
``vm:<name>``; the node cache cross-checks references against the real backing chains.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from vmic.imagelist.model import Image
from vmic.log import event
from vmic.private import TRAVERSE, private_dir

from ..config import ProvisionConfig
from ..errors import UnknownImage
from ..selection import matches, resolve
from ..state import HeldImage, State, VmRecord
from ..storage.base import Disk, Storage
from .context import build_iso, context_files
from .domain import DomainSpec
from .errors import BaseVanished, DiskFailed, NameTaken, NotAllowed, UnknownVm
from .hypervisors import Hypervisor
from .request import VmRequest, parse_duration

log = logging.getLogger("nodecache.provision")
Progress = Callable[[dict[str, Any]], None]


class Images(Protocol):
    """What the shim needs of the node cache (:class:`nodecache.keeper.ImageKeeper`)."""

    def current(self) -> list[Image]:
        """The images of the lists in force that have not expired."""

    async def record(self, sha512: str) -> HeldImage | None: ...

    async def ensure(self, wanted: str, progress: Progress | None = None) -> HeldImage:
        """The staged base of ``wanted``, staged now if needed."""

    async def add_reference(self, wanted: str, holder: str, disk: str = "") -> HeldImage: ...

    async def drop_reference(self, holder: str) -> bool: ...


def holder(name: str) -> str:
    return f"vm:{name}"


def iso_time(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


@dataclass(frozen=True)
class VmView:
    record: VmRecord
    running: bool

    def to_json(self) -> dict[str, Any]:
        return {**self.record.to_json(), "running": self.running, "expires_at": iso_time(self.record.expires)}


class Provisioner:
    def __init__(self, images: Images, vms: State, storage: Storage, hypervisor: Callable[[], Hypervisor],
                 config: ProvisionConfig, vm_dir: Path) -> None:
        """``hypervisor``: makes the hypervisor on first use (libvirt connects then)."""
        self.images = images
        self.vms = vms
        self.storage = storage
        self.config = config
        self.vm_dir = vm_dir
        self.default_ttl = parse_duration(self.config.default_ttl, "default_ttl")
        self._make_hypervisor = hypervisor
        self._hypervisor: Hypervisor | None = None
        self._busy: set[str] = set()  #: names being created or destroyed
        self.host_cpus = os.cpu_count() or 1  #: a pin names CPUs below this

    @property
    def hypervisor(self) -> Hypervisor:
        if self._hypervisor is None:
            self._hypervisor = self._make_hypervisor()
        return self._hypervisor

    def request(self, body: Any) -> VmRequest:
        return VmRequest.from_json(body, self.default_ttl, self.config.default_memory, self.config.default_vcpus,
                                   self.host_cpus)

    # --- create ---------------------------------------------------------------------------------

    async def create(self, request: VmRequest, progress: Progress | None = None) -> VmRecord:
        name = request.name
        if name in self._busy or await self.vms.vm(name) is not None or name in await self.hypervisor.names():
            raise NameTaken(f"a VM named {name!r} exists on this node")
        self._busy.add(name)
        undo: list[tuple[str, Callable[[], Any]]] = []
        try:
            held = await self._staged(request, progress or (lambda _: None))
            await self._reference(name, held, undo)
            disk = await self._disk(name, held, undo)
            await self.images.add_reference(held.sha512, holder(name), disk.path)
            iso = self.vm_dir / f"{name}.iso"
            undo.append(("iso", lambda: iso.unlink(missing_ok=True)))
            instance = str(uuid.uuid4())
            files = context_files(name, instance, request.user_data, request.context, request.ssh_keys)
            try:
                private_dir(self.vm_dir, TRAVERSE)
                await asyncio.to_thread(build_iso, iso, files)
            except OSError as exc:
                raise DiskFailed(f"cannot write the context ISO of {name}: {exc.strerror or exc}") from None
            now = time.time()
            record = VmRecord(name, instance, held.sha512, held.identifier, held.title, held.version, disk.path,
                              disk.kind, str(iso), request.memory_mib, request.vcpus,
                              ",".join(map(str, request.pin)), now, now + request.ttl_seconds)
            await self.hypervisor.start(self.spec(record, held), paused=request.paused)
            undo.append(("domain", lambda: self.hypervisor.destroy(name)))
            await self.vms.add_vm(record)
        except BaseException as exc:
            for what, step in reversed(undo):
                try:
                    result = step()
                    if asyncio.iscoroutine(result):
                        await result
                except Exception:  # keep undoing; the first error is the one to report
                    log.exception("provision.undo_failed", extra={"fields": {"vm": name, "step": what}})
            event(log, "provision.create_failed", level=logging.WARNING, vm=name, reason=str(exc))
            raise
        finally:
            self._busy.discard(name)
        event(log, "provision.created", vm=name, image=held.identifier, disk=disk.path,
              expires=iso_time(record.expires))
        return record

    async def _staged(self, request: VmRequest, progress: Progress) -> HeldImage:
        image = resolve(self.images.current(), request.image)
        if image is None:
            raise UnknownImage(f"no followed list names an image {request.image!r}")
        if not matches(image, self.config.allow):
            raise NotAllowed(f"image {image.title or image.identifier} ({image.identifier}) may not run on "
                             "this node")
        return await self.images.ensure(image.identifier, progress)

    async def _reference(self, name: str, held: HeldImage, undo: list[tuple[str, Callable[[], Any]]]) -> None:
        """Hold the base (no disk yet: nothing for the cross-check to miss), then make sure
        it is still there: eviction may have run between staging and now."""
        await self.images.add_reference(held.sha512, holder(name), "")
        undo.append(("reference", lambda: self.images.drop_reference(holder(name))))
        if not await self.storage.present(held.location):
            raise BaseVanished(f"the base of image {held.identifier} vanished from this node ({held.location}); "
                               "ensure it again")

    async def _disk(self, name: str, held: HeldImage, undo: list[tuple[str, Callable[[], Any]]]) -> Disk:
        undo.append(("disk", lambda: self.storage.remove_disk(name)))
        return await self.storage.create_disk(name, held.base())

    def spec(self, record: VmRecord, held: HeldImage | None = None) -> DomainSpec:
        return DomainSpec(
            name=record.name, uuid=record.uuid, memory_mib=record.memory_mib, vcpus=record.vcpus,
            pin=tuple(int(c) for c in record.pin.split(",") if c), disk=record.disk, disk_type=record.disk_kind,
            base=held.location if held is not None and record.disk_kind == "file" else "",
            base_format=held.format if held is not None else "raw", iso=record.iso,
            image_identifier=record.identifier, image_sha512=record.sha512, expires=iso_time(record.expires),
            domain_type=self.hypervisor.domain_type, emulator=f"/usr/bin/{self.config.qemu}")

    # --- the rest of the life cycle -------------------------------------------------------------

    async def _record(self, name: str) -> VmRecord:
        record = await self.vms.vm(name)
        if record is None:
            raise UnknownVm(f"no VM named {name!r} on this node")
        return record

    async def start(self, name: str) -> VmRecord:
        record = await self._record(name)
        if not await self.hypervisor.running(name):
            await self.hypervisor.destroy(name)  # defined again from the record, as it is now
            await self.hypervisor.start(self.spec(record, await self.images.record(record.sha512)))
        return record

    async def stop(self, name: str) -> VmRecord:
        record = await self._record(name)
        await self.hypervisor.stop(name)
        return record

    async def destroy(self, name: str, reason: str = "request") -> VmRecord:
        record = await self._record(name)
        if name in self._busy:
            raise NameTaken(f"VM {name!r} is being created or destroyed")
        self._busy.add(name)
        try:
            await self.hypervisor.destroy(name)
            await self.storage.remove_disk(name)
            Path(record.iso).unlink(missing_ok=True)
            await self.images.drop_reference(holder(name))
            await self.vms.drop_vm(name)
        finally:
            self._busy.discard(name)
        event(log, "provision.destroyed", vm=name, reason=reason)
        return record

    async def show(self, name: str) -> VmView:
        record = await self._record(name)
        return VmView(record, await self.hypervisor.running(name))

    async def all(self) -> list[VmView]:
        return [VmView(r, await self.hypervisor.running(r.name)) for r in await self.vms.vms()]

    async def reap(self, now: float | None = None) -> list[str]:
        """Destroy every VM whose time to live is over; their disks and ISOs go too."""
        now = time.time() if now is None else now
        reaped = []
        for record in await self.vms.vms():
            if record.expires <= now and record.name not in self._busy:
                await self.destroy(record.name, reason="expired")
                reaped.append(record.name)
        return reaped

    async def rebase(self) -> list[str]:
        """After the cache directory moved: point every overlay at its base where the base
        is now, and the records at the VM files where they are now."""
        repaired = []
        for record in await self.vms.vms():
            held = await self.images.record(record.sha512)
            if held is None or held.state != "staged":
                continue
            base = held.base()
            repointed = await self.storage.repoint_disk(record.name, base)
            if repointed is None:
                continue
            disk, changed = repointed
            if changed:
                repaired.append(record.name)
            iso = self.vm_dir / f"{record.name}.iso"
            if record.disk != disk or record.iso != str(iso):
                await self.vms.update_vm(record.name, disk=disk, iso=str(iso))
            await self.images.add_reference(record.sha512, holder(record.name), disk)
            event(log, "provision.rebased", vm=record.name, base=held.location)
        return repaired

    async def leaks(self) -> dict[str, list[str]]:
        """What exists without a VM record: files, references, domains (for tests and audits)."""
        names = {r.name for r in await self.vms.vms()}
        files = sorted(p.name for p in self.vm_dir.glob("*") if p.is_file() and p.stem not in names) \
            if self.vm_dir.is_dir() else []
        refs = sorted(r.holder for r in await self.vms.refs()
                      if r.holder.startswith("vm:") and r.holder[3:] not in names)
        domains = sorted(await self.hypervisor.names() - names - {"test"})  # "test": libvirt test driver's own
        return {"files": files, "references": refs, "domains": domains}
