"""Storage: bases (staged images) and VM disks, behind one protocol (:mod:`.base`).

:mod:`.pipeline` verifies and decompresses in one streaming pass; :mod:`.files` and
:mod:`.lvm` are the two backends (immutable base files with qcow2 overlays, or
read-only logical volumes with snapshots), each with the same steps: stage under a
temporary name, verify, publish (rename and mark), at start-up sweep leftovers of a
crash; and a VM disk per VM, in constant time. :func:`build_storage` is the only
place that knows which backend a node runs.
"""

from __future__ import annotations

from ..config import NodeConfig
from ..lvm import VolumeGroup
from .base import Storage
from .files import FileStorage
from .lvm import LvmStorage

__all__ = ["Storage", "FileStorage", "LvmStorage", "build_storage"]


def build_storage(config: NodeConfig, vg: VolumeGroup | None = None) -> Storage:
    if config.backend == "file":
        return FileStorage(config.cache_dir / "base", config.format, config.vm_dir)
    return LvmStorage(vg or VolumeGroup(config.volume_group), config.cache_dir / "scratch", config.thin_pool,
                      config.provision.snapshot_share)
