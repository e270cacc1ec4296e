"""The node daemon on the LVM backend, on real device-mapper (in the guest): SIGKILL
mid-stage and the next start (sweep, adoption from tags, staging again); eviction by
watermark on a volume group that fills, never of a base with a live snapshot."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from conftest import lvm, publish, volumes
from support import NodeProcess, node_api, node_config, running_node, until, wait_staged, write_image

from nodecache.config import ProvisionConfig
from nodecache.storage.lvm import base_name, staging_name
from vmic.pki import KeyPaths


def volume_sha512(vg: str, name: str, size: int) -> str:
    lvm("lvchange", "-ay", "-K", f"{vg}/{name}")
    try:
        with open(f"/dev/{vg}/{name}", "rb") as device:
            return hashlib.sha512(device.read(size)).hexdigest()
    finally:
        lvm("lvchange", "-an", f"{vg}/{name}")


async def test_sigkill_mid_stage_then_sweep_adopt_and_stage_again(catalogue: Any, keys: KeyPaths,
                                                                   volume_group: str, tmp_path: Path) -> None:
    # capacity given: the daemon's status and plans need no vgs (about 1 s each under TCG)
    config = node_config(tmp_path / "node", catalogue.url, keys, backend="lvm", volume_group=volume_group,
                         torrent_wait=0.0, retry_after=0.0, capacity=2**33)
    node = NodeProcess(config, tmp_path)
    await node.start()
    try:
        first = await publish(catalogue, write_image(tmp_path / "a.raw", 4 * 2**20), name="a")
        await node.until_staged(first["sha512"], 120, every=1.0)
        second = await publish(catalogue, write_image(tmp_path / "b.raw", 32 * 2**20, seed=2), name="b")
        writing = Path("/dev") / volume_group / staging_name(second["sha512"])
        # the staging volume is active exactly while its bytes are written: kill then
        await until(writing.exists, "the second image's staging volume being written", 120)
        node.kill(group=True)
    finally:
        node.stop()
    left = volumes(volume_group)
    assert staging_name(second["sha512"]) in left and base_name(second["sha512"]) not in left
    (config.cache_dir / "state.db").unlink()  # and the node's database is lost too: the volumes' tags tell

    await node.start()
    try:
        adopted = await node.until_staged(first["sha512"], 120, every=1.0)
        assert adopted["identifier"] == first["identifier"] and adopted["version"] == first["version"]
        staged = await node.until_staged(second["sha512"], 240, every=1.0)
        assert staged["location"] == f"{volume_group}/{base_name(second['sha512'])}"
    finally:
        node.stop()
    log = node.log.read_text()
    assert '"node.swept"' in log and staging_name(second["sha512"]) in log
    assert '"node.reconcile_adopted"' in log
    assert set(volumes(volume_group)) == {base_name(first["sha512"]), base_name(second["sha512"])}
    assert volume_sha512(volume_group, base_name(second["sha512"]), second["size"]) == second["sha512"]


async def test_eviction_on_a_filling_volume_group_keeps_a_base_with_a_snapshot(
        catalogue: Any, keys: KeyPaths, small_volume_group: str, tmp_path: Path) -> None:
    """Four 12 MiB images in a 56-60 MiB volume group, watermarks 0.7 / 0.45: the fourth
    takes the cache over the high mark, and the least recently used bases go down to the
    low one, except the first, which a VM's snapshot holds."""
    vg = small_volume_group
    config = node_config(tmp_path / "node", catalogue.url, keys, backend="lvm", volume_group=vg, seed=False,
                         torrent_wait=0.0, high_watermark=0.7, low_watermark=0.45,
                         provision=ProvisionConfig(hypervisor="libvirt", libvirt_uri="test:///default"))
    records = []
    async with running_node(config) as node:
        for index in range(3):
            records.append(await publish(catalogue, write_image(tmp_path / f"{index}.raw", 12 * 2**20, seed=index),
                                         name=f"img{index}"))
        await node.refresh()
        for record in records:
            await wait_staged(node, record["sha512"], 180)
        status, body = await node_api(config.socket_path, "POST", "/vms",
                                 {"image": records[0]["identifier"], "name": "keeper"})
        assert status == 200 and "result" in body, body
        assert volumes(vg)["vm-keeper"]["origin"] == base_name(records[0]["sha512"])

        fourth = await publish(catalogue, write_image(tmp_path / "3.raw", 12 * 2**20, seed=3), name="img3")
        await node.refresh()
        await wait_staged(node, fourth["sha512"], 120)
        await node.gc()
        held = {r.sha512: r.state for r in await node.state.images()}
        assert held[records[0]["sha512"]] == "staged", "a base with a live snapshot stays"
        assert held[fourth["sha512"]] == "staged"
        assert held[records[1]["sha512"]] == held[records[2]["sha512"]] == "evicted"
        assert set(volumes(vg)) == {base_name(records[0]["sha512"]), base_name(fourth["sha512"]), "vm-keeper"}

        status, _ = await node_api(config.socket_path, "DELETE", "/vms/keeper")
        assert status == 200
        assert "vm-keeper" not in volumes(vg)
