"""The LVM backend: one read-only logical volume per image version.

    <vg>/vmic-<first 32 hex of sha512>            read-only, tags vmic.sha512=..., vmic.identifier=...
    <vg>/vmic-staging-<first 32 hex>              while staging, tag vmic.staging (swept at start-up)

Staging: the disk header is checked, a volume of the image's virtual size is created
(active) under the temporary name and written with ``qemu-img convert -n -t none -O raw``
while the sha512 pass runs (a compressed image is first decompressed and verified
into ``scratch``), deactivated, tagged and made read-only (one ``lvchange``) and only
then, when both the write and the sha512 succeeded, renamed into place. VM snapshots (thin, with the image volume as external origin, or
classic) are the provisioning shim's; names never embed the base's name, tags link
them.

Where the kernel has no device-mapper, volumes cannot be activated: every metadata
step still runs for real, and the write says clearly why it cannot happen
(:class:`~nodecache.errors.BackendUnavailable`).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from vmic.imagelist.model import Image

from .. import qemu

from ..lvm import LogicalVolume, VolumeGroup, parse_tags, tag
from ..private import private_dir
from ..tools import run
from .base import Progress, Staged
from .pipeline import check_head, copy_verified, gather_all, verify_only

STAGING_TAG = "vmic.staging"
EXTENT = 4 * 2**20


def base_name(sha512: str) -> str:
    return f"vmic-{sha512[:32]}"


def staging_name(sha512: str) -> str:
    return f"vmic-staging-{sha512[:32]}"


class LvmBackend:
    def __init__(self, volume_group: str, scratch: Path) -> None:
        self.vg = VolumeGroup(volume_group)
        self.scratch = scratch
        private_dir(scratch)

    def target_format(self, image: Image) -> str:
        return "raw"

    async def stage(self, source: Path, image: Image, metadata: dict[str, str], progress: Progress) -> Staged:
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


