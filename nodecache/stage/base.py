"""What both staging backends share: the staged base as data, and the steps' contract."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
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


class Backend(Protocol):
    async def stage(self, source: Path, image: Image, metadata: dict[str, str], progress: Progress) -> Staged:
        """Verify ``source`` (the image as published) and publish it as a base, atomically."""

    async def staged(self) -> list[Staged]:
        """Every published base, read from the disk (or LVM), not from the database."""

    async def remove(self, sha512: str) -> None: ...

    async def sweep(self) -> list[str]:
        """Remove leftovers of an interrupted stage; return what was removed."""

    async def capacity(self) -> int:
        """Size of the file system or volume group that holds the bases."""

    def target_format(self, image: Image) -> str: ...
