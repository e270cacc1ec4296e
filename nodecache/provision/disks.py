"""A VM's copy-on-write disk on a staged base: never a copy of the image.

- file backend: ``<vm_dir>/<name>.qcow2``, a qcow2 overlay whose backing file is the
  base (absolute path, backing format always stated with ``-F``), made by ``qemu-img
  create``; :func:`rebase` repoints overlays (``qemu-img rebase -u``) after the cache
  directory moved, so a move never orphans a VM;
- LVM backend: a thin snapshot with the read-only base volume as external origin
  (``lvcreate -s --thinpool VG/POOL VG/BASE -kn``) where a thin pool is configured,
  else a classic snapshot sized by policy, activated (LVM makes a classic snapshot of an
  inactive origin inactive, with no device to open). The volume is ``vm-<name>``: never the
  base's name; the link to the base is in its tags and in the shim's records.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .. import qemu
from ..private import TRAVERSE, private_dir
from ..errors import BackendUnavailable, StageFailed
from ..lvm import VolumeGroup, tag
from ..tools import run
from .errors import DiskFailed


@dataclass(frozen=True)
class Disk:
    path: str  #: the overlay file, or /dev/VG/vm-NAME
    kind: str  #: "file" or "block"


class FileDisks:
    def __init__(self, vm_dir: Path) -> None:
        self.vm_dir = vm_dir

    def path(self, name: str) -> Path:
        return self.vm_dir / f"{name}.qcow2"

    async def create(self, name: str, base: Path, base_format: str) -> Disk:
        private_dir(self.vm_dir, TRAVERSE)
        overlay = self.path(name)
        try:
            await qemu.create_overlay(base, base_format, overlay)
            os.chmod(overlay, 0o600)  # empty yet: what the VM writes is its own
        except StageFailed as exc:
            overlay.unlink(missing_ok=True)
            raise DiskFailed(f"cannot create the overlay of {name}: {exc}") from None
        return Disk(str(overlay), "file")

    async def remove(self, name: str) -> None:
        self.path(name).unlink(missing_ok=True)

    async def backing_file(self, name: str) -> str | None:
        return (await qemu.info(self.path(name), "qcow2")).backing_file

    async def rebase(self, name: str, base: Path, base_format: str) -> None:
        """Point the overlay at ``base`` without touching data (the bytes are the same)."""
        await run("qemu-img", "rebase", "-u", "-f", "qcow2", "-b", str(base), "-F", base_format,
                  str(self.path(name)), error=DiskFailed)


class LvmDisks:
    def __init__(self, volume_group: str, thin_pool: str, snapshot_share: float) -> None:
        self.vg = VolumeGroup(volume_group)
        self.thin_pool = thin_pool
        self.snapshot_share = snapshot_share  #: classic snapshots: this share of the origin's size

    @staticmethod
    def volume(name: str) -> str:
        return f"vm-{name}"

    async def create(self, name: str, base_volume: str, base_sha512: str, origin_size: int) -> Disk:
        """``base_volume`` is "vg/lv" as the node cache staged it."""
        volume = self.volume(name)
        tags = ("--addtag", tag("vm", name), "--addtag", tag("base", base_sha512))
        if self.thin_pool:
            args = ["-s", "--thinpool", f"{self.vg.name}/{self.thin_pool}", base_volume, "-n", volume, "-kn", *tags]
        else:
            size = max(4 * 2**20, int(origin_size * self.snapshot_share)) // (4 * 2**20) * (4 * 2**20)
            args = ["-s", "-L", f"{size}b", "-n", volume, *tags, base_volume]
        try:
            await self.vg.lvcreate(*args)
        except StageFailed as exc:
            raise DiskFailed(f"cannot create the snapshot of {name}: {exc}") from None
        if not self.thin_pool:
            # a classic snapshot of an inactive (read-only) base is made inactive: no device
            # for the VM until it is activated (which activates the base under it too)
            try:
                await self.vg.activate(volume)
            except (StageFailed, BackendUnavailable) as exc:
                await self.remove(name)
                raise DiskFailed(f"cannot activate the snapshot of {name}: {exc}") from None
        return Disk(f"/dev/{self.vg.name}/{volume}", "block")

    async def remove(self, name: str) -> None:
        if self.volume(name) in {v.name for v in await self.vg.volumes()}:
            await self.vg.remove(self.volume(name))
