"""lvm2, through :mod:`.tools`: the logical volumes of one volume group, as data.

Reports are read with ``--reportformat json`` in bytes. Where the kernel has no
device-mapper (``/dev/mapper/control`` cannot be opened), every command runs with ``--driverloaded n``:
LVM then edits metadata only (create, tag, rename, read-only, remove all work), and
nothing can be activated, so no data can be written into a volume
(:func:`device_mapper_available` tells which).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import BackendUnavailable
from .tools import run, run_json

DM_CONTROL = Path("/dev/mapper/control")
_TAG_UNSAFE = re.compile(r"[^A-Za-z0-9_+.\-/=!:&#]")


def device_mapper_available(control: Path = DM_CONTROL) -> bool:
    """Whether the kernel has device-mapper. The control node alone proves nothing: LVM
    creates it even where the kernel lacks the driver, and opening it then fails."""
    try:
        os.close(os.open(control, os.O_RDWR))
    except OSError:
        return False
    return True


def tag(key: str, value: str) -> str:
    """``vmic.key=value`` with characters LVM refuses in tags replaced."""
    return _TAG_UNSAFE.sub("_", f"vmic.{key}={value}")[:1024]


def parse_tags(tags: tuple[str, ...]) -> dict[str, str]:
    return dict(t.removeprefix("vmic.").split("=", 1) for t in tags if t.startswith("vmic.") and "=" in t)


@dataclass(frozen=True)
class LogicalVolume:
    name: str
    size: int
    tags: tuple[str, ...]
    attr: str

    @property
    def read_only(self) -> bool:
        return len(self.attr) > 1 and self.attr[1] == "r"

    @property
    def vmic(self) -> dict[str, str]:
        return parse_tags(self.tags)


@dataclass(frozen=True)
class VolumeGroup:
    name: str
    #: device-mapper's control node (another path: a kernel without device-mapper, for tests)
    dm_control: Path = DM_CONTROL

    def _env(self) -> dict[str, str]:
        return {**os.environ, "LVM_SUPPRESS_FD_WARNINGS": "1"}

    def _common(self) -> tuple[str, ...]:
        return () if device_mapper_available(self.dm_control) else ("--driverloaded", "n")

    async def _run(self, program: str, *args: str) -> str:
        return await run(program, *self._common(), *args, env=self._env())

    async def volumes(self) -> list[LogicalVolume]:
        body = await run_json("lvs", *self._common(), "--reportformat", "json", "--units", "b", "--nosuffix",
                              "-o", "lv_name,lv_size,lv_tags,lv_attr", self.name, env=self._env())
        rows = body["report"][0]["lv"]
        return [LogicalVolume(r["lv_name"], int(r["lv_size"]), tuple(t for t in r["lv_tags"].split(",") if t),
                              r["lv_attr"]) for r in rows]

    async def size_and_free(self) -> tuple[int, int]:
        body = await run_json("vgs", *self._common(), "--reportformat", "json", "--units", "b", "--nosuffix",
                              "-o", "vg_size,vg_free", self.name, env=self._env())
        row = body["report"][0]["vg"][0]
        return int(row["vg_size"]), int(row["vg_free"])

    async def lvcreate(self, *args: str) -> None:
        await self._run("lvcreate", *args)

    async def create(self, name: str, size: int, tags: tuple[str, ...], active: bool = False) -> Path:
        """A new volume, not zeroed (``-Zn``: it is about to be written whole); ``active``:
        activated for writing at once (one lvm call less than activating it after)."""
        if active:
            self._need_device_mapper(name)
        args = ["-ay" if active else "-an", "-Zn", "-L", f"{size}b", "-n", name]
        for t in tags:
            args += ["--addtag", t]
        await self._run("lvcreate", *args, self.name)
        return Path("/dev") / self.name / name

    def _need_device_mapper(self, name: str) -> None:
        if not device_mapper_available(self.dm_control):
            raise BackendUnavailable(f"cannot write into {self.name}/{name}: this kernel has no device-mapper "
                                     f"({self.dm_control} cannot be opened)")

    async def seal(self, name: str, add: tuple[str, ...], drop: tuple[str, ...]) -> None:
        """Tags added and dropped, and the volume made read-only, in one lvm call."""
        args: list[str] = []
        for t in add:
            args += ["--addtag", t]
        for t in drop:
            args += ["--deltag", t]
        await self._run("lvchange", *args, "-pr", f"{self.name}/{name}")

    async def rename(self, old: str, new: str) -> None:
        await self._run("lvrename", self.name, old, new)

    async def remove(self, name: str) -> None:
        await self._run("lvremove", "-y", f"{self.name}/{name}")

    async def activate(self, name: str) -> Path:
        """Activate for writing; where there is no device-mapper, say so."""
        self._need_device_mapper(name)
        # -y: activating a classic snapshot activates its origin too, which lvm asks about
        await self._run("lvchange", "-ay", "-y", f"{self.name}/{name}")
        return Path("/dev") / self.name / name

    async def deactivate(self, name: str) -> None:
        if device_mapper_available(self.dm_control):
            await self._run("lvchange", "-an", f"{self.name}/{name}")
