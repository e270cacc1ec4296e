"""``vmprov`` on the LVM backend, on real device-mapper (in the guest): VMs on thin
snapshots with the read-only base as external origin, and on classic snapshots; the
disk reads the base's bytes and writes only to the snapshot; destroy leaves nothing;
a failed create leaves nothing; after the volume group is deactivated and activated
again (as at a reboot) the node and its VMs carry on. The VMs run on libvirt's test
driver: the disks are checked with dd-like reads and writes, not a nested boot."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from conftest import lvm, publish, volumes
from support import node_api, node_config, running_node, wait_staged, write_image

from nodecache.config import ProvisionConfig
from nodecache.storage.lvm import base_name
from vmic.pki import KeyPaths

SIZE = 8 * 2**20
PATTERN = b"written by the VM " * 4096


def read(device: str, size: int = SIZE) -> bytes:
    with open(device, "rb") as handle:
        return handle.read(size)


def write(device: str, data: bytes) -> None:
    fd = os.open(device, os.O_WRONLY)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


async def create(socket: Path, name: str, image: str) -> dict[str, Any]:
    status, body = await node_api(socket, "POST", "/vms", {"image": image, "name": name})
    assert status == 200 and "result" in body, body
    return dict(body["result"])


async def no_leftovers(node: Any) -> None:
    assert await node.provisioner.leaks() == {"files": [], "references": [], "domains": []}
    assert [r.holder for r in await node.state.refs()] == []


async def test_thin_snapshots_of_a_read_only_base(catalogue: Any, keys: KeyPaths, volume_group: str,
                                                  thin_pool: str, tmp_path: Path) -> None:
    vg = volume_group
    config = node_config(tmp_path / "node", catalogue.url, keys, backend="lvm", volume_group=vg,
                         thin_pool=thin_pool, torrent_wait=0.0, capacity=2**33,  # no vgs per plan (TCG)
                         provision=ProvisionConfig(hypervisor="libvirt", libvirt_uri="test:///default"))
    source = write_image(tmp_path / "golden.raw", SIZE)
    record = await publish(catalogue, source)
    base = base_name(record["sha512"])
    async with running_node(config) as node:
        await node.refresh()
        await wait_staged(node, record["sha512"], 120)
        one = await create(config.socket_path, "web-1", record["identifier"])
        two = await create(config.socket_path, "web-2", record["identifier"])  # a second one on the same base
        for name in ("vm-web-1", "vm-web-2"):
            row = volumes(vg)[name]
            assert row["origin"] == base and row["pool_lv"] == thin_pool and row["lv_attr"][0] == "V"
        assert one["disk"] == f"/dev/{vg}/vm-web-1" and two["disk"] == f"/dev/{vg}/vm-web-2"
        assert read(one["disk"]) == source.read_bytes(), "the snapshot reads the base's bytes"

        write(one["disk"], PATTERN)
        assert read(one["disk"], len(PATTERN)) == PATTERN
        assert read(two["disk"]) == source.read_bytes(), "the other VM's disk is untouched"
        assert volumes(vg)[base]["lv_attr"][1] == "r"
        status, body = await node_api(config.socket_path, "POST", "/evict", {"image": record["identifier"]})
        assert status == 409 and body["error"] == "in_use"

    # as at a reboot: every volume deactivated, then the volume group activated again
    lvm("vgchange", "-an", vg)
    lvm("vgchange", "-ay", vg)
    async with running_node(config) as node:
        assert (await node.state.get(record["sha512"])).state == "staged"
        assert read(one["disk"], len(PATTERN)) == PATTERN, "the VM's writes survived"
        three = await create(config.socket_path, "web-3", record["identifier"])  # the base still serves
        assert read(three["disk"]) == source.read_bytes()
        for name in ("web-1", "web-2", "web-3"):
            status, _ = await node_api(config.socket_path, "DELETE", f"/vms/{name}")
            assert status == 200
        assert set(volumes(vg)) >= {base, thin_pool} and not any(v.startswith("vm-") for v in volumes(vg))
        await no_leftovers(node)
        lvm("lvchange", "-ay", "-K", f"{vg}/{base}")
        try:  # the base never changed
            assert hashlib.sha512(read(f"/dev/{vg}/{base}", record["size"])).hexdigest() == record["sha512"]
        finally:
            lvm("lvchange", "-an", f"{vg}/{base}")


async def test_classic_snapshot_and_a_failed_create_that_leaves_nothing(
        catalogue: Any, keys: KeyPaths, small_volume_group: str, tmp_path: Path) -> None:
    vg = small_volume_group
    provision = ProvisionConfig(hypervisor="libvirt", libvirt_uri="test:///default", snapshot_share=0.5)
    config = node_config(tmp_path / "node", catalogue.url, keys, backend="lvm", volume_group=vg, seed=False,
                         torrent_wait=0.0, capacity=2**26, provision=provision)
    source = write_image(tmp_path / "golden.raw", SIZE)
    record = await publish(catalogue, source)
    async with running_node(config) as node:
        await node.refresh()
        await wait_staged(node, record["sha512"], 120)
        vm = await create(config.socket_path, "batch-1", record["identifier"])
        row = volumes(vg)["vm-batch-1"]
        assert row["origin"] == base_name(record["sha512"]) and row["lv_attr"][0] == "s"
        assert int(row["lv_size"]) == SIZE // 2, "sized by snapshot_share"
        assert read(vm["disk"]) == source.read_bytes()
        write(vm["disk"], PATTERN)
        assert read(vm["disk"], len(PATTERN)) == PATTERN
        status, _ = await node_api(config.socket_path, "DELETE", "/vms/batch-1")
        assert status == 200
        assert set(volumes(vg)) == {base_name(record["sha512"])}
        await no_leftovers(node)


        # a volume group with no room left for a snapshot: refused, and nothing of the VM remains
        lvm("lvcreate", "-q", "-an", "-Zn", "-l", "100%FREE", "-n", "filler", vg)
        status, body = await node_api(config.socket_path, "POST", "/vms",
                                      {"image": record["identifier"], "name": "no-room"})
        assert body["error"] == "disk_failed" and "insufficient free space" in body["message"], (status, body)
        assert set(volumes(vg)) == {base_name(record["sha512"]), "filler"}
        await no_leftovers(node)
