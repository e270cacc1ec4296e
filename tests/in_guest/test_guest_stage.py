"""The LVM backend's data path on real device-mapper (in the guest): an image staged as
a read-only volume whose bytes are the signed ones, through a staging volume and a
rename; a volume group too small refuses cleanly."""

from __future__ import annotations

import hashlib
import subprocess
import uuid
from pathlib import Path

import pytest
import zstandard
from conftest import volumes
from support import write_image

from nodecache.errors import StageFailed
from nodecache.lvm import VolumeGroup, device_mapper_available
from nodecache.storage.base import metadata_for
from nodecache.storage.lvm import STAGING_TAG, LvmStorage, base_name, staging_name
from vmic.imagelist.model import EXT_COMPRESSION, Image


def image_for(path: Path, fmt: str = "raw", compression: str = "none") -> Image:
    data = path.read_bytes()
    return Image(identifier=str(uuid.uuid4()), uri="http://x", size=len(data), sha512=hashlib.sha512(data).hexdigest(),
                 version="2026.11 rc", title="alice/golden", format=fmt,
                 extra={EXT_COMPRESSION: compression} if compression != "none" else {})


def read_volume(vg: str, name: str, size: int) -> bytes:
    """The first ``size`` bytes of a (read-only, inactive) volume, activated for the read."""
    subprocess.run(["lvchange", "-ay", f"{vg}/{name}"], check=True, capture_output=True)
    try:
        with open(f"/dev/{vg}/{name}", "rb") as device:
            return device.read(size)
    finally:
        subprocess.run(["lvchange", "-an", f"{vg}/{name}"], check=True, capture_output=True)


def test_the_guest_has_device_mapper() -> None:
    assert device_mapper_available()


async def test_raw_image_staged_through_a_staging_volume(volume_group: str, tmp_path: Path) -> None:
    backend = LvmStorage(VolumeGroup(volume_group), tmp_path / "scratch")
    source = write_image(tmp_path / "golden.raw", 8 * 2**20 + 4096)
    image = image_for(source)
    seen: list[dict[str, dict[str, str]]] = []

    def progress(done: int) -> None:  # called from the hashing thread while the volume is written
        if not seen:
            seen.append(volumes(volume_group))

    staged = await backend.stage(source, image, metadata_for(image, "raw", "http://c", 7), progress)
    [during] = seen
    assert staging_name(image.sha512) in during and base_name(image.sha512) not in during
    assert STAGING_TAG in during[staging_name(image.sha512)]["lv_tags"]

    after = volumes(volume_group)
    assert set(after) == {base_name(image.sha512)}, "the staging volume was renamed into place"
    volume = after[base_name(image.sha512)]
    assert volume["lv_attr"][1] == "r" and volume["lv_attr"][4] == "-", "read-only, left inactive"
    assert f"vmic.sha512={image.sha512}" in volume["lv_tags"] and "vmic.list_version=7" in volume["lv_tags"]
    assert staged.location == f"{volume_group}/{base_name(image.sha512)}" and staged.format == "raw"
    assert hashlib.sha512(read_volume(volume_group, base_name(image.sha512), image.size)).hexdigest() \
        == image.sha512


async def test_qcow2_image_converted_into_a_raw_volume(volume_group: str, tmp_path: Path) -> None:
    raw = write_image(tmp_path / "golden.raw", 8 * 2**20)
    published = tmp_path / "golden.qcow2"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(published)], check=True)
    image = image_for(published, fmt="qcow2")
    backend = LvmStorage(VolumeGroup(volume_group), tmp_path / "scratch")
    staged = await backend.stage(published, image, metadata_for(image, "raw", "http://c", 1), lambda n: None)
    assert staged.format == "raw"
    name = base_name(image.sha512)
    assert read_volume(volume_group, name, raw.stat().st_size) == raw.read_bytes()
    subprocess.run(["lvchange", "-ay", f"{volume_group}/{name}"], check=True)
    try:  # qemu-img compare: the volume holds the published qcow2's disk
        compare = subprocess.run(["qemu-img", "compare", "-f", "qcow2", "-F", "raw", str(published),
                                  f"/dev/{volume_group}/{name}"], capture_output=True, text=True)
    finally:
        subprocess.run(["lvchange", "-an", f"{volume_group}/{name}"], check=True)
    assert compare.returncode == 0, compare.stdout + compare.stderr


async def test_zstd_image_decompressed_verified_and_written(volume_group: str, tmp_path: Path) -> None:
    raw = write_image(tmp_path / "golden.raw", 6 * 2**20 + 512, seed=3)
    published = tmp_path / "golden.raw.zst"
    published.write_bytes(zstandard.ZstdCompressor().compress(raw.read_bytes()))
    image = image_for(published, compression="zstd")
    backend = LvmStorage(VolumeGroup(volume_group), tmp_path / "scratch")
    await backend.stage(published, image, metadata_for(image, "raw", "http://c", 1), lambda n: None)
    assert read_volume(volume_group, base_name(image.sha512), raw.stat().st_size) == raw.read_bytes()
    assert list((tmp_path / "scratch").iterdir()) == [], "the decompressed scratch copy is gone"


async def test_a_full_volume_group_refuses_and_leaves_nothing(small_volume_group: str, tmp_path: Path) -> None:
    source = tmp_path / "big.raw"
    with open(source, "wb") as handle:  # 256 MiB virtual size in a 192 MiB volume group
        handle.truncate(256 * 2**20)
    image = image_for(source)
    backend = LvmStorage(VolumeGroup(small_volume_group), tmp_path / "scratch")
    with pytest.raises(StageFailed, match="insufficient free space"):
        await backend.stage(source, image, metadata_for(image, "raw", "http://c", 1), lambda n: None)
    assert volumes(small_volume_group) == {}
