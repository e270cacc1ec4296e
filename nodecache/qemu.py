"""qemu-img, through :mod:`.tools`: image facts (``--output=json``), conversion, overlays.

The format is always given (``-f``/``-F``); the one probe (:func:`check_safe`) only checks
that qemu agrees with the declared format, after the header was found safe.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ImageRefused
from .tools import run, run_json


@dataclass(frozen=True)
class ImageInfo:
    format: str
    virtual_size: int
    actual_size: int
    backing_file: str | None
    data_file: str | None

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> ImageInfo:
        specific = body.get("format-specific", {}).get("data", {})
        return cls(body["format"], int(body["virtual-size"]), int(body.get("actual-size", 0)),
                   body.get("backing-filename") or body.get("full-backing-filename"), specific.get("data-file"))


async def info(path: Path, fmt: str) -> ImageInfo:
    # -U: also while another process (a VM) has the image open
    return ImageInfo.from_json(await run_json("qemu-img", "info", "-U", "--output=json", "-f", fmt, str(path)))


async def check_safe(path: Path, fmt: str) -> ImageInfo:
    """qemu-img's own view agrees with :mod:`.inspect`: the format it would probe is the
    declared one (asked only after :func:`~nodecache.disk_header.check` passed, so the probe
    never opens what a hostile header names), and no backing or external data file."""
    probed = (await run_json("qemu-img", "info", "-U", "--output=json", str(path))).get("format")
    if probed != fmt:
        raise ImageRefused(f"declared {fmt} but qemu-img sees a {probed} image")
    facts = await info(path, fmt)
    if facts.backing_file:
        raise ImageRefused(f"image names a backing file ({facts.backing_file})")
    if facts.data_file:
        raise ImageRefused(f"image names an external data file ({facts.data_file})")
    return facts


async def convert(source: Path, source_format: str, target: Path, target_format: str) -> None:
    # -W: out-of-order writes (faster); -n is not used: qemu-img creates the target itself
    await run("qemu-img", "convert", "-W", "-f", source_format, "-O", target_format, str(source), str(target))


async def create_overlay(base: Path, base_format: str, overlay: Path) -> None:
    """A qcow2 overlay whose backing file is ``base`` (absolute), format stated."""
    await run("qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base.resolve()), "-F", base_format,
              str(overlay))
