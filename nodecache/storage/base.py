"""The one storage protocol of the node: what the file and LVM backends both do, and the
data they hand back. The node daemon and the provisioning shim see only this; which
backend it is was decided once, in :func:`nodecache.storage.build_storage`.

A backend holds *bases* (one per staged image, immutable, named by the image's sha512)
and *VM disks* (a copy-on-write disk per VM on a base: an overlay file or a snapshot).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Protocol

from vmic.imagelist.model import Image

#: metadata kept with every staged base (file xattrs ``user.vmic.*``, or LVM tags)
METADATA_KEYS = ("identifier", "version", "sha512", "format", "list_version", "catalogue", "staged")

Progress = Callable[[int], None]


def metadata_for(image: Image, fmt: str, catalogue: str, list_version: int) -> dict[str, str]:
    return {"identifier": image.identifier, "version": image.version, "sha512": image.sha512, "format": fmt,
            "list_version": str(list_version), "catalogue": catalogue, "staged": f"{time.time():.0f}"}


@dataclass(frozen=True)
class Staged:
    sha512: str
    location: str  #: the base file's path, or "vg/lv"
    format: str  #: "raw" or "qcow2" (an LVM volume is raw)
    allocated: int  #: bytes it takes on disk or in the volume group
    metadata: dict[str, str]


@dataclass(frozen=True)
class Base:
    """A staged base as a VM disk needs it (from the node's record of it)."""

    sha512: str
    location: str
    format: str
    size: int  #: bytes the cache holds for it (a classic snapshot is sized from it)


@dataclass(frozen=True)
class Disk:
    path: str  #: the overlay file, or /dev/VG/vm-NAME
    kind: str  #: "file" or "block"


class DiskCheck(Enum):
    """What the disk a reference names says about that reference."""

    OK = "ok"  #: the disk exists on its base (or cannot be doubted)
    GONE = "gone"  #: the disk no longer exists: the reference is stale
    OTHER_BASE = "other_base"  #: the disk's backing is not the base: kept (never evict on doubt), reported


def held_bytes(staged: Staged, data_dir: Path) -> int:
    """Bytes the cache holds for an image: its base, plus the seed copy in ``data_dir`` if
    that is another file (not a hard link to the base)."""
    size = staged.allocated
    data = data_dir / staged.sha512
    with contextlib.suppress(FileNotFoundError):
        stat = data.stat()
        if not os.path.exists(staged.location) or not os.path.samefile(data, staged.location):
            size += stat.st_blocks * 512
    return size


class Storage(Protocol):
    #: "file" or "lvm" (shown in status; never compared outside the factory)
    name: str

    def target_format(self, image: Image) -> str:
        """The format the base of ``image`` has once staged."""

    # --- bases ------------------------------------------------------------------------------

    async def stage(self, source: Path, image: Image, metadata: dict[str, str], progress: Progress,
                    known_sha512: str | None = None) -> Staged:
        """Verify ``source`` (the image as published) and publish it as a base, atomically.
        ``known_sha512``: the sha512 of ``source`` as hashed while it arrived; where it is the
        signed one, the whole-image pass need not run again (else it does, before refusing)."""

    async def staged(self) -> list[Staged]:
        """Every published base, read from the disk (or LVM), not from the database."""

    async def present(self, location: str) -> bool:
        """Whether the base at ``location`` still exists."""

    async def remove(self, sha512: str) -> None: ...

    async def sweep(self) -> list[str]:
        """Remove leftovers of an interrupted stage; return what was removed."""

    async def capacity(self) -> int:
        """Size of the file system or volume group that holds the bases."""

    # --- VM disks ---------------------------------------------------------------------------

    async def create_disk(self, vm: str, base: Base) -> Disk:
        """A copy-on-write disk for ``vm`` on ``base``, in constant time (never a copy)."""

    async def remove_disk(self, vm: str) -> None:
        """Idempotent."""

    async def check_disk(self, disk: str, base: Base) -> DiskCheck:
        """Cross-check a reference's disk against the base it is recorded on."""

    async def repoint_disk(self, vm: str, base: Base) -> tuple[str, bool] | None:
        """After the cache directory moved: make ``vm``'s disk use ``base`` where it is now.
        Returns the disk's path now and whether it had to be repointed; None where the
        backend's disks never name their base by path (nothing to do)."""
