"""Fixtures of the tests that run inside a guest with device-mapper (``tools/guest.py``;
``tests/test_lvm_guest.py`` boots the guest and reports each of these tests).

The guest's scratch disks are ``/dev/vda`` (8 GiB, sparse on the host) and ``/dev/vdb``
(64 MiB: a volume group that fills). Every test gets an empty volume group and leaves
it empty."""

from __future__ import annotations

import contextlib
import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import RunningCatalogue, until, upload_request

LVM_ENV = {"LVM_SUPPRESS_FD_WARNINGS": "1", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}


def lvm(*args: str) -> str:
    result = subprocess.run(args, capture_output=True, text=True, env=LVM_ENV)
    assert result.returncode == 0, f"{' '.join(args)}: {result.stderr.strip()}"
    return result.stdout


@contextlib.contextmanager
def volume_group_on(device: str) -> Iterator[str]:
    name = f"vmicg{uuid.uuid4().hex[:8]}"
    lvm("pvcreate", "-ff", "-y", "-q", device)
    lvm("vgcreate", "-q", name, device)
    try:
        yield name
    finally:
        subprocess.run(["vgremove", "-ff", "-y", name], capture_output=True, env=LVM_ENV)
        subprocess.run(["pvremove", "-ff", "-y", device], capture_output=True, env=LVM_ENV)


@pytest.fixture(scope="session")
def _big_vg() -> Iterator[str]:
    with volume_group_on("/dev/vda") as name:
        yield name


@pytest.fixture(scope="session")
def _small_vg() -> Iterator[str]:
    with volume_group_on("/dev/vdb") as name:
        yield name


def emptied(name: str) -> Iterator[str]:
    """The volume group, and after the test none of its volumes (a vgs, and an lvremove if
    anything is left, rather than a new VG: under TCG every lvm command costs about 1 s)."""
    try:
        yield name
    finally:
        if json.loads(lvm("vgs", "--reportformat", "json", "-o", "lv_count", name))["report"][0]["vg"][0]["lv_count"] \
                != "0":
            lvm("lvremove", "-ff", "-y", name)


@pytest.fixture
def volume_group(_big_vg: str) -> Iterator[str]:
    """A volume group of 8 GiB, empty."""
    yield from emptied(_big_vg)


@pytest.fixture
def small_volume_group(_small_vg: str) -> Iterator[str]:
    """A volume group of 60 MiB, empty: one that fills."""
    yield from emptied(_small_vg)


@pytest.fixture
def thin_pool(volume_group: str) -> str:
    lvm("lvcreate", "-q", "-T", "-L", "1g", f"{volume_group}/pool")
    return "pool"


def volumes(vg: str) -> dict[str, dict[str, str]]:
    """``lvs`` of ``vg`` (hidden volumes too), by name."""
    body = json.loads(lvm("lvs", "-a", "--reportformat", "json", "--units", "b", "--nosuffix",
                          "-o", "lv_name,lv_size,lv_attr,lv_tags,origin,pool_lv", vg))
    return {row["lv_name"]: row for row in body["report"][0]["lv"]}


async def publish(catalogue: RunningCatalogue, path: Path, **request: Any) -> dict[str, Any]:
    """Publish ``path`` and wait until the signed list names it (not for its torrent:
    under TCG hashing it takes a while, and nodes fetch over HTTP meanwhile)."""
    async with catalogue.client() as client:
        record = await client.upload(path, upload_request(path, **request))

    def listed() -> bool:
        return catalogue.catalogue.listing.current.image_list.image(record["identifier"]) is not None

    await until(listed, "the image in the signed list", 60)
    return dict(record)
