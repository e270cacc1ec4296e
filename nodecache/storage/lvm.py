"""The LVM backend: one read-only logical volume per image version.

    <vg>/vmic-<first 32 hex of sha512>            read-only, tags vmic.sha512=..., vmic.identifier=...
    <vg>/vmic-staging-<first 32 hex>              while staging, tag vmic.staging (swept at start-up)

Staging: the disk header is checked, a volume of the image's virtual size is created
(active) under the temporary name and written with ``qemu-img convert -n -t none -O raw``
while the sha512 pass runs (a compressed image is first decompressed and verified
into ``scratch``), deactivated, tagged and made read-only (one ``lvchange``) and only
then, when both the write and the sha512 succeeded, renamed into place.

VM disks: ``<vg>/vm-<name>``, a thin snapshot with the read-only base volume as external
origin (``lvcreate -s --thinpool VG/POOL VG/BASE -kn``) where a thin pool is configured,
else a classic snapshot sized by policy, activated (LVM makes a classic snapshot of an
inactive origin inactive, with no device to open). Names never embed the base's name;
tags link them.

Where the kernel has no device-mapper, volumes cannot be activated: every metadata
step still runs for real, and the write says clearly why it cannot happen
(:class:`~nodecache.errors.BackendUnavailable`).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from vmic.imagelist.model import Image
from vmic.private import private_dir

from .. import qemu
from ..errors import BackendUnavailable, StageFailed
from ..lvm import LogicalVolume, VolumeGroup, parse_tags, tag
from ..provision.errors import DiskFailed
from ..tools import run
from .base import Base, Disk, DiskCheck, Progress, Staged
from .pipeline import check_head, copy_verified, gather_all, verify_only

STAGING_TAG = "vmic.staging"
EXTENT = 4 * 2**20


def base_name(sha512: str) -> str:
    return f"vmic-{sha512[:32]}"


def staging_name(sha512: str) -> str:
    return f"vmic-staging-{sha512[:32]}"


class LvmStorage:
    name = "lvm"

    def __init__(self, vg: VolumeGroup, scratch: Path, thin_pool: str = "", snapshot_share: float = 0.2) -> None:
        self.vg = vg
        self.scratch = scratch
        self.thin_pool = thin_pool
        self.snapshot_share = snapshot_share  #: classic snapshots: this share of the origin's size
        private_dir(scratch)

    def target_format(self, image: Image) -> str:
        return "raw"

    async def stage(self, source: Path, image: Image, metadata: dict[str, str], progress: Progress,
                    known_sha512: str | None = None) -> Staged:
        # the copy into the volume hashes as it writes: a sha512 known from the download
        # would save CPU, not time (the write is the bound), so it is checked again here
        unpacked = self.scratch / f"{image.sha512}.{image.format}"
        name = staging_name(image.sha512)
        try:
            if image.compression == "none":  # hash and write at the same time; publish if both succeed
                await asyncio.to_thread(check_head, source, image.format)
                size, device = await self._new_volume(name, source, image.format)
                await gather_all(asyncio.to_thread(verify_only, source, image.sha512, image.format, progress),
                                 self.write_volume(name, device, source, image.format))
            else:
                await asyncio.to_thread(copy_verified, source, unpacked, image.sha512, image.compression,
                                        image.format, progress)
                size, device = await self._new_volume(name, unpacked, image.format)
                await self.write_volume(name, device, unpacked, image.format)
            metadata = {**metadata, "format": "raw"}
            await self.publish(name, image.sha512, metadata)
        except BaseException:
            if name in {v.name for v in await self.vg.volumes()}:
                await self.vg.remove(name)
            raise
        finally:
            unpacked.unlink(missing_ok=True)
        # as staged() will read it back from the tags (LVM's tag alphabet), without asking lvs
        return Staged(image.sha512, f"{self.vg.name}/{base_name(image.sha512)}", "raw", size,
                      parse_tags(tuple(tag(k, v) for k, v in metadata.items())))

    async def _new_volume(self, name: str, image: Path, fmt: str) -> tuple[int, Path]:
        """The staging volume for ``image`` (checked safe by qemu-img first): its size (the
        virtual size in whole extents) and its device, active for writing."""
        facts = await qemu.check_safe(image, fmt)
        size = -(-facts.virtual_size // EXTENT) * EXTENT
        return size, await self.vg.create(name, size, (STAGING_TAG,), active=True)

    async def write_volume(self, name: str, device: Path, source: Path, fmt: str) -> None:
        """Write the image into the (new, active, staging) volume as raw, then deactivate it.
        ``-t none``: the volume is written with O_DIRECT (measured in the guest: twice as fast
        as through the page cache); the source is read through the page cache, which the
        sha512 pass over the same bytes shares."""
        try:
            await run("qemu-img", "convert", "-n", "-t", "none", "-f", fmt, "-O", "raw", str(source), str(device))
        finally:
            await self.vg.deactivate(name)

    async def publish(self, name: str, sha512: str, metadata: dict[str, str]) -> None:
        """The last steps, metadata only: tagged and read-only in one call, renamed into place."""
        await self.vg.seal(name, tuple(tag(k, v) for k, v in metadata.items()), (STAGING_TAG,))
        await self.vg.rename(name, base_name(sha512))

    def _describe(self, volume: LogicalVolume) -> Staged | None:
        meta = volume.vmic
        if not volume.name.startswith("vmic-") or "sha512" not in meta or STAGING_TAG in volume.tags:
            return None
        return Staged(meta["sha512"], f"{self.vg.name}/{volume.name}", "raw", volume.size, meta)

    async def staged(self) -> list[Staged]:
        return [s for v in await self.vg.volumes() if (s := self._describe(v)) is not None]

    async def remove(self, sha512: str) -> None:
        names = {v.name for v in await self.vg.volumes()}
        for name in (base_name(sha512), staging_name(sha512)):
            if name in names:
                await self.vg.remove(name)

    async def sweep(self) -> list[str]:
        removed = []
        for volume in await self.vg.volumes():
            if STAGING_TAG in volume.tags or volume.name.startswith("vmic-staging-"):
                await self.vg.remove(volume.name)
                removed.append(volume.name)
        for path in self.scratch.iterdir():
            path.unlink()
            removed.append(path.name)
        return removed

    async def capacity(self) -> int:
        size, _ = await self.vg.size_and_free()
        return size

    async def present(self, location: str) -> bool:
        return location.split("/", 1)[-1] in {v.name for v in await self.vg.volumes()}

    # --- VM disks: snapshots --------------------------------------------------------------------

    @staticmethod
    def disk_volume(vm: str) -> str:
        return f"vm-{vm}"

    async def create_disk(self, vm: str, base: Base) -> Disk:
        """``base.location`` is "vg/lv" as staged."""
        volume = self.disk_volume(vm)
        tags = ("--addtag", tag("vm", vm), "--addtag", tag("base", base.sha512))
        if self.thin_pool:
            args = ["-s", "--thinpool", f"{self.vg.name}/{self.thin_pool}", base.location, "-n", volume, "-kn",
                    *tags]
        else:
            size = max(EXTENT, int(base.size * self.snapshot_share)) // EXTENT * EXTENT
            args = ["-s", "-L", f"{size}b", "-n", volume, *tags, base.location]
        try:
            await self.vg.lvcreate(*args)
        except StageFailed as exc:
            raise DiskFailed(f"cannot create the snapshot of {vm}: {exc}") from None
        if not self.thin_pool:
            # a classic snapshot of an inactive (read-only) base is made inactive: no device
            # for the VM until it is activated (which activates the base under it too)
            try:
                await self.vg.activate(volume)
            except (StageFailed, BackendUnavailable) as exc:
                await self.remove_disk(vm)
                raise DiskFailed(f"cannot activate the snapshot of {vm}: {exc}") from None
        return Disk(f"/dev/{self.vg.name}/{volume}", "block")

    async def remove_disk(self, vm: str) -> None:
        if self.disk_volume(vm) in {v.name for v in await self.vg.volumes()}:
            await self.vg.remove(self.disk_volume(vm))

    async def check_disk(self, disk: str, base: Base) -> DiskCheck:
        return DiskCheck.OK  # a snapshot names its origin by volume, which never moves: nothing to doubt

    async def repoint_disk(self, vm: str, base: Base) -> tuple[str, bool] | None:
        return None


