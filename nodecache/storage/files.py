"""The file backend: immutable, content-addressed base files.

    <cache>/base/<sha512>.raw | <sha512>.qcow2      mode 0444, user.vmic.* xattrs
    <cache>/base/.staging-<sha512>.<format>         while staging (swept at start-up)

The name is the image's sha512 as published, so it never changes and an overlay never
points at a renamed file. Staging writes under the temporary name, checks the bytes
against the signed sha512 and the disk header (ours, then qemu-img's), converts with
qemu-img if the node's format differs, fsyncs, sets the xattrs and mode, and only then
renames into place (atomic on one file system). Where the node keeps the published
bytes for seeding and they are already the base (uncompressed, same format), the base
is a hard link to them: staging costs one hashing pass and no copy. An uncompressed
image in another format is hashed and converted at the same time (two cores), and
published only if both succeed.

VM disks: ``<vm_dir>/<name>.qcow2``, a qcow2 overlay whose backing file is the base
(absolute path, backing format always stated with ``-F``), made by ``qemu-img create``;
:meth:`FileStorage.repoint_disk` repoints an overlay (``qemu-img rebase -u``) after the
cache directory moved, so a move never orphans a VM.
"""

from __future__ import annotations

import asyncio
import errno
import os
from pathlib import Path

import xattr

from vmic.imagelist.model import Image
from vmic.private import TRAVERSE, private_dir

from .. import qemu
from ..errors import NodeCacheError, StageFailed
from ..provision.errors import DiskFailed
from ..tools import run
from .base import METADATA_KEYS, Base, Disk, DiskCheck, Progress, Staged
from .pipeline import check_head, copy_verified, gather_all, verify_only

PREFIX = ".staging-"
XATTR = "user.vmic."


def read_metadata(path: Path) -> dict[str, str]:
    attributes = xattr.xattr(str(path))
    return {key: attributes.get(XATTR + key).decode() for key in METADATA_KEYS if XATTR + key in attributes}


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileStorage:
    name = "file"

    def __init__(self, base_dir: Path, node_format: str, vm_dir: Path) -> None:
        self.base_dir = base_dir
        self.node_format = node_format  #: "raw", "qcow2" or "published"
        self.vm_dir = vm_dir
        base_dir.mkdir(parents=True, exist_ok=True)

    def target_format(self, image: Image) -> str:
        return image.format if self.node_format == "published" else self.node_format

    def path(self, sha512: str, fmt: str) -> Path:
        return self.base_dir / f"{sha512}.{fmt}"

    async def stage(self, source: Path, image: Image, metadata: dict[str, str], progress: Progress,
                    known_sha512: str | None = None) -> Staged:
        fmt = self.target_format(image)
        final = self.path(image.sha512, fmt)
        first = self.base_dir / f"{PREFIX}{image.sha512}.{image.format}"
        second = self.base_dir / f"{PREFIX}{image.sha512}.converted.{fmt}"
        try:
            for leftover in (first, second):
                leftover.unlink(missing_ok=True)
            if image.compression == "none":
                # the published bytes as they are: header checks first (ours, then qemu-img's),
                # then the sha512 pass, overlapped with the conversion if there is one
                await asyncio.to_thread(check_head, source, image.format)
                await qemu.check_safe(source, image.format)
                verify = asyncio.to_thread(verify_only, source, image.sha512, image.format, progress) \
                    if known_sha512 != image.sha512 else asyncio.sleep(0)  # hashed while it arrived
                if image.format == fmt:  # zero copy: the verified download is the base
                    await verify
                    await asyncio.to_thread(os.link, source, first)
                    staged = first
                else:
                    await gather_all(verify, qemu.convert(source, image.format, second, fmt))
                    staged = second
            else:
                await asyncio.to_thread(copy_verified, source, first, image.sha512, image.compression,
                                        image.format, progress)
                await qemu.check_safe(first, image.format)
                staged = first
                if image.format != fmt:
                    await qemu.convert(first, image.format, second, fmt)
                    first.unlink()
                    staged = second
            await asyncio.to_thread(self._seal, staged, {**metadata, "format": fmt})
            await asyncio.to_thread(os.rename, staged, final)
            await asyncio.to_thread(_fsync_dir, self.base_dir)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StageFailed(f"disk full while staging into {self.base_dir}") from None
            raise StageFailed(f"cannot stage into {self.base_dir}: {exc.strerror or exc}") from None
        finally:
            for leftover in (first, second):
                leftover.unlink(missing_ok=True)
        return self._describe(final)

    @staticmethod
    def _seal(path: Path, metadata: dict[str, str]) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        attributes = xattr.xattr(str(path))
        for key, value in metadata.items():
            attributes.set(XATTR + key, value.encode())
        os.chmod(path, 0o444)

    def _describe(self, path: Path) -> Staged:
        sha512, _, fmt = path.name.partition(".")
        return Staged(sha512, str(path), fmt, path.stat().st_blocks * 512, read_metadata(path))

    async def staged(self) -> list[Staged]:
        def scan() -> list[Staged]:
            return [self._describe(p) for p in sorted(self.base_dir.iterdir())
                    if not p.name.startswith(".") and p.suffix in (".raw", ".qcow2")]
        return await asyncio.to_thread(scan)

    async def remove(self, sha512: str) -> None:
        for fmt in ("raw", "qcow2"):
            self.path(sha512, fmt).unlink(missing_ok=True)

    async def sweep(self) -> list[str]:
        removed = []
        for path in self.base_dir.iterdir():
            if path.name.startswith(PREFIX):
                path.unlink()
                removed.append(path.name)
        return removed

    async def capacity(self) -> int:
        stat = os.statvfs(self.base_dir)
        return stat.f_blocks * stat.f_frsize

    async def present(self, location: str) -> bool:
        return os.path.exists(location)

    # --- VM disks: qcow2 overlays -------------------------------------------------------------

    def disk_path(self, vm: str) -> Path:
        return self.vm_dir / f"{vm}.qcow2"

    async def create_disk(self, vm: str, base: Base) -> Disk:
        private_dir(self.vm_dir, TRAVERSE)
        overlay = self.disk_path(vm)
        try:
            await qemu.create_overlay(Path(base.location), base.format, overlay)
            os.chmod(overlay, 0o600)  # empty yet: what the VM writes is its own
        except StageFailed as exc:
            overlay.unlink(missing_ok=True)
            raise DiskFailed(f"cannot create the overlay of {vm}: {exc}") from None
        return Disk(str(overlay), "file")

    async def remove_disk(self, vm: str) -> None:
        self.disk_path(vm).unlink(missing_ok=True)

    async def check_disk(self, disk: str, base: Base) -> DiskCheck:
        if not os.path.exists(disk):
            return DiskCheck.GONE
        try:
            facts = await qemu.info(Path(disk), "qcow2")
        except NodeCacheError:
            return DiskCheck.OK  # unreadable now: never evict on doubt
        return DiskCheck.OK if facts.backing_file == base.location else DiskCheck.OTHER_BASE

    async def repoint_disk(self, vm: str, base: Base) -> tuple[str, bool] | None:
        """Point the overlay at ``base`` without touching data (the bytes are the same)."""
        overlay = self.disk_path(vm)
        if (await qemu.info(overlay, "qcow2")).backing_file == base.location:
            return str(overlay), False
        await run("qemu-img", "rebase", "-u", "-f", "qcow2", "-b", base.location, "-F", base.format, str(overlay),
                  error=DiskFailed)
        return str(overlay), True
