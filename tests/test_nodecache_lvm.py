"""The LVM backend's metadata against a real volume group on a loop device.

Every metadata step runs for real (create, tag, read-only, rename, list with
``--reportformat json``, sweep, remove, a full volume group), and on a kernel without
device-mapper (this host's, or any, by pointing the volume group at a control node that
does not exist) a stage or a VM snapshot fails cleanly with no volume left. The data
path on real device-mapper runs in a guest: ``tests/in_guest/`` (``test_lvm_guest.py``).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import write_image

from nodecache.errors import BackendUnavailable, StageFailed
from nodecache.lvm import VolumeGroup, tag
from nodecache.storage.base import Base, metadata_for
from nodecache.storage.lvm import STAGING_TAG, LvmStorage, base_name, staging_name
from vmic.imagelist.model import Image


@pytest.fixture
def volume_group(tmp_path: Path) -> Iterator[str]:
    if shutil.which("lvcreate") is None or shutil.which("losetup") is None:
        pytest.fail("lvm2 is not installed: tools/test installs it (apt-get install -y lvm2)", pytrace=False)
    backing = tmp_path / "pv.img"
    with open(backing, "wb") as handle:
        handle.truncate(256 * 2**20)
    attach = subprocess.run(["losetup", "-f", "--show", str(backing)], capture_output=True, text=True)
    if attach.returncode != 0:
        pytest.fail(f"no loop device here: {attach.stderr.strip()}", pytrace=False)
    device = attach.stdout.strip()
    name = f"vmictest{uuid.uuid4().hex[:8]}"
    env = {"LVM_SUPPRESS_FD_WARNINGS": "1", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    try:
        subprocess.run(["pvcreate", "-q", device], check=True, capture_output=True, env=env)
        subprocess.run(["vgcreate", "-q", name, device], check=True, capture_output=True, env=env)
        yield name
    finally:
        subprocess.run(["vgremove", "-f", "-q", name], capture_output=True, env=env)
        subprocess.run(["pvremove", "-q", device], capture_output=True, env=env)
        subprocess.run(["losetup", "-d", device], capture_output=True)


def image_for(path: Path) -> Image:
    data = path.read_bytes()
    return Image(identifier=str(uuid.uuid4()), uri="http://x", size=len(data), sha512=hashlib.sha512(data).hexdigest(),
                 version="2024.1 rc", title="alice/golden")


async def test_volume_life_cycle_in_metadata(volume_group: str) -> None:
    vg = VolumeGroup(volume_group)
    await vg.create("vmic-staging-x", 8 * 2**20, (STAGING_TAG,))
    await vg.seal("vmic-staging-x", (tag("sha512", "ab" * 64), tag("version", "2024.1 rc")), (STAGING_TAG,))
    await vg.rename("vmic-staging-x", "vmic-x")
    [volume] = await vg.volumes()
    assert volume.name == "vmic-x" and volume.size == 8 * 2**20 and volume.read_only
    assert volume.vmic == {"sha512": "ab" * 64, "version": "2024.1_rc"}  # LVM's tag alphabet
    size, free = await vg.size_and_free()
    assert size - free == 8 * 2**20
    await vg.remove("vmic-x")
    assert await vg.volumes() == []


async def test_publish_and_list_staged_bases(volume_group: str, tmp_path: Path) -> None:
    """The last steps of a stage (tag, read-only, rename into place), then what the
    backend reports as staged: the published volume only, never one being staged."""
    backend = LvmStorage(VolumeGroup(volume_group), tmp_path / "scratch")
    image = image_for(write_image(tmp_path / "a.raw", 2**20))
    await backend.vg.create(staging_name(image.sha512), 4 * 2**20, (STAGING_TAG,))
    assert await backend.staged() == []
    await backend.publish(staging_name(image.sha512), image.sha512, metadata_for(image, "raw", "http://c", 9))
    [staged] = await backend.staged()
    assert staged.sha512 == image.sha512 and staged.location == f"{volume_group}/{base_name(image.sha512)}"
    assert staged.metadata["identifier"] == image.identifier and staged.metadata["list_version"] == "9"
    assert (await backend.vg.volumes())[0].read_only
    await backend.remove(image.sha512)
    assert await backend.vg.volumes() == []


async def test_sweep_removes_half_staged_volumes_only(volume_group: str, tmp_path: Path) -> None:
    backend = LvmStorage(VolumeGroup(volume_group), tmp_path / "scratch")
    image = image_for(write_image(tmp_path / "a.raw", 2**20))
    await backend.vg.create(staging_name(image.sha512), 4 * 2**20, (STAGING_TAG,))
    await backend.vg.create("vmic-staging-renamed", 4 * 2**20, ())
    await backend.vg.create("someone-elses", 4 * 2**20, ())
    (tmp_path / "scratch" / "half.raw").write_bytes(b"x")
    removed = await backend.sweep()
    assert sorted(removed) == sorted([staging_name(image.sha512), "vmic-staging-renamed", "half.raw"])
    assert [v.name for v in await backend.vg.volumes()] == ["someone-elses"]


async def test_full_volume_group_is_a_clear_error(volume_group: str) -> None:
    vg = VolumeGroup(volume_group)
    with pytest.raises(StageFailed, match="insufficient free space"):
        await vg.create("vmic-huge", 2**30, ())
    assert await vg.volumes() == []


async def test_stage_without_device_mapper_fails_cleanly(volume_group: str, tmp_path: Path) -> None:
    backend = LvmStorage(VolumeGroup(volume_group, dm_control=tmp_path / "no-device-mapper"), tmp_path / "scratch")
    source = write_image(tmp_path / "a.raw", 2**20)
    image = image_for(source)
    with pytest.raises(BackendUnavailable, match="no device-mapper"):
        await backend.stage(source, image, metadata_for(image, "raw", "http://c", 1), lambda n: None)
    assert await backend.vg.volumes() == [], "the half-made volume was removed"


async def test_vm_snapshot_without_device_mapper_fails_cleanly(volume_group: str, tmp_path: Path) -> None:
    """A VM's snapshot of a base volume (the provisioning shim's LVM disk): where there is
    no device-mapper LVM refuses to make one; the error says so and nothing is left."""
    from nodecache.provision.errors import DiskFailed

    vg = VolumeGroup(volume_group, dm_control=tmp_path / "no-device-mapper")
    await vg.create("vmic-base", 8 * 2**20, (tag("sha512", "ab" * 64),))
    await vg.seal("vmic-base", (), ())  # read-only, as staged bases are
    storage = LvmStorage(vg, tmp_path / "scratch", thin_pool="", snapshot_share=0.2)
    with pytest.raises(DiskFailed, match="device-mapper"):
        await storage.create_disk("web-1", Base("ab" * 64, f"{volume_group}/vmic-base", "raw", 8 * 2**20))
    assert [v.name for v in await vg.volumes()] == ["vmic-base"]
