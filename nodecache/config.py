"""The node daemon's configuration (TOML; environment overrides as everywhere in vmic).

    [nodecache]
    cache_dir = "/var/lib/vmic-nodecache"
    node_name = "hv001"               # default: the host name (preheat targets, tracker progress)
    backend = "file"                  # or "lvm"
    format = "qcow2"                  # base format for the file backend: raw, qcow2, or "published"
    volume_group = "vmic"             # lvm backend
    listen = "0.0.0.0:6881"           # BitTorrent
    upload_limit = "50M"              # bytes/s for seeding to peers, 0 = none
    capacity = "500G"                 # the cache's own budget (0: the file system's or VG's size)
    high_watermark = 0.9              # evict when the cache's own bytes exceed this share ...
    low_watermark = 0.7               # ... down to this share, least recently used first

    [[nodecache.catalogue]]           # as every follower's (vmic/catalogue_source.py)
    url = "https://catalogue.example:8470"
    ca = "/etc/vmic/ca"               # the list's signing CA
    endorser_dn = "/C=CH/O=Site/CN=endorser"
    tls_ca = "/etc/vmic/tls-ca.pem"   # the HTTPS certificate's CA, if not a public one

    [nodecache.select]                # which images to pre-stage (all by default)
    os = ["linux"]
    latest = 2                        # newest versions per image name

    [nodecache.provision]             # the VM shim (vmprov)
    hypervisor = "libvirt"            # or "qemu": qemu-system started directly
    libvirt_uri = "qemu:///system"
    default_ttl = "48h"                # durations: "90s", "5m", "48h", "7d" or seconds
    [nodecache.provision.allow]       # images allowed to run here (same keys as select)
    publishers = ["alice"]
"""

from __future__ import annotations

import grp
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vmic.catalogue_source import CatalogueSource, catalogue_source
from vmic.config import Duration, Listen, OptionalListen, Size, Wait, load_section, read_toml
from vmic.errors import ConfigError
from vmic.preheat import NODE_NAME

BACKENDS = ("file", "lvm")
BASE_FORMATS = ("raw", "qcow2", "published")

@dataclass(frozen=True)
class Selection:
    """Which images this node pre-stages. Empty tuples match everything; ``latest`` keeps
    the newest N versions of each image name (0: every version in the list)."""

    #: sl:os values
    os: tuple[str, ...] = ()
    #: sl:arch values
    arch: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()  #: words of the title or description, or vmic:tags entries
    #: publisher names
    publishers: tuple[str, ...] = ()
    names: tuple[str, ...] = ()  #: vmic:namespace/vmic:name or titles
    #: the newest N versions of each image name (0: every version in the list)
    latest: int = 0
    none: bool = False  #: pre-stage nothing (only what ``ensure`` asks for)


HYPERVISORS = ("qemu", "libvirt")


@dataclass(frozen=True)
class ProvisionConfig:
    """``[nodecache.provision]``: how the shim starts VMs on this node."""

    hypervisor: str = "qemu"  #: "libvirt" (libvirt_uri) or "qemu" (qemu-system started directly)
    #: (hypervisor = "libvirt")
    libvirt_uri: str = "qemu:///system"
    vm_dir: Path | None = None  #: overlays, ISOs, qemu run files (default <cache_dir>/vms)
    #: a VM's lifetime when its request names none
    default_ttl: Duration = 48 * 3600.0
    default_memory: int = 2048  #: MiB
    #: a VM's vCPUs when its request names none
    default_vcpus: int = 1
    #: classic LVM snapshots (no thin pool): this share of the image's size for changes
    snapshot_share: float = 0.2
    #: the qemu binary (hypervisor = "qemu")
    qemu: str = "qemu-system-x86_64"
    #: hypervisor = "qemu": each VM in a systemd scope of its own (vmic-vm-<name>.scope in
    #: vmic-vms.slice), outside the daemon's cgroup, so a restart of the daemon's service
    #: leaves VMs running: "auto" (where systemd runs the host), "systemd" or "none"
    vm_scope: str = "auto"
    #: images allowed to run here (same keys as [nodecache.select]; empty: all listed)
    allow: Selection = field(default_factory=Selection)

    def __post_init__(self) -> None:
        if self.hypervisor not in HYPERVISORS:
            raise ConfigError(f"[nodecache.provision] hypervisor must be one of {', '.join(HYPERVISORS)}")
        if self.vm_scope not in ("auto", "systemd", "none"):
            raise ConfigError('[nodecache.provision] vm_scope must be "auto", "systemd" or "none"')


@dataclass(frozen=True)
class NodeConfig:
    #: downloads, base files, state.db, the socket and VM files (0700)
    cache_dir: Path
    catalogues: tuple[CatalogueSource, ...] = ()
    #: this node's name: preheat targets name nodes, and the tracker shows progress by name
    node_name: str = field(default_factory=socket.gethostname)
    #: "file" (base files) or "lvm" (read-only logical volumes)
    backend: str = "file"
    #: base files: "raw", "qcow2" or "published" (as the catalogue has it)
    format: str = "qcow2"
    #: the LVM volume group (backend = "lvm")
    volume_group: str = ""
    #: a thin pool in it for VM snapshots (empty: classic snapshots)
    thin_pool: str = ""
    #: where BitTorrent peers reach this node
    listen: Listen = "0.0.0.0:6881"
    #: bytes per second, 0: no limit
    upload_limit: Size = 0
    #: (see upload_limit)
    download_limit: Size = 0
    #: keep the downloaded image to seed it to peers (it costs its size again where the
    #: base differs from the published bytes: conversion, compression, LVM)
    seed: bool = True
    #: use the catalogue's web seed (BEP 19); off: peers and seeders only, the catalogue
    #: serves no image bytes to this node
    web_seed: bool = True
    #: the cache's own budget (0: the file system's or the volume group's size)
    capacity: Size = 0
    #: evict when the cache's own bytes exceed this share of capacity ...
    high_watermark: float = 0.9
    #: ... down to this share, least recently used first
    low_watermark: float = 0.7
    #: re-read each catalogue's list at least this often (its event stream is faster)
    poll_interval: Duration = 60.0
    #: after a failed fetch or stage, wait this long before the next attempt
    retry_after: Wait = 60.0
    #: a new image without a torrent yet, from a catalogue that makes torrents: wait this
    #: long for the torrent before pre-staging it over plain HTTP
    torrent_wait: Wait = 120.0
    #: concurrent fetch-and-stage jobs
    parallel: int = 2
    #: the API's Unix socket (default <cache_dir>/nodecache.sock)
    socket: Path | None = None
    #: the group that may use the socket besides root (a cloud controller's service user's)
    socket_group: str = ""
    #: host:port of a plain-HTTP listener for /metrics and /readyz (empty: the socket only)
    metrics_listen: OptionalListen = ""
    #: debug, info, warning or error (reloaded on SIGHUP)
    log_level: str = "info"
    select: Selection = field(default_factory=Selection)
    provision: ProvisionConfig = field(default_factory=ProvisionConfig)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"[nodecache] backend must be one of {', '.join(BACKENDS)}, not {self.backend!r}")
        if self.format not in BASE_FORMATS:
            raise ConfigError(f"[nodecache] format must be one of {', '.join(BASE_FORMATS)}, not {self.format!r}")
        if self.socket_group:
            try:
                grp.getgrnam(self.socket_group)
            except KeyError:
                raise ConfigError(f"[nodecache] socket_group {self.socket_group!r} is not a group here") from None
        if self.backend == "lvm" and not self.volume_group:
            raise ConfigError("[nodecache] backend = \"lvm\" needs volume_group")
        if not NODE_NAME.fullmatch(self.node_name):
            raise ConfigError(f"[nodecache] node_name {self.node_name!r}: letters, digits, '.', '_' and '-' only")
        if not 0 < self.low_watermark <= self.high_watermark <= 1:
            raise ConfigError("[nodecache] watermarks must satisfy 0 < low_watermark <= high_watermark <= 1")

    @property
    def socket_path(self) -> Path:
        return self.socket or self.cache_dir / "nodecache.sock"

    @property
    def vm_dir(self) -> Path:
        return self.provision.vm_dir or self.cache_dir / "vms"


def _selection(table: Any, where: str = "[nodecache.select]") -> Selection:
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: expected a table")
    unknown = set(table) - set(Selection.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key == "latest":
            values[key] = int(value)
        elif key == "none":
            values[key] = bool(value)
        else:
            values[key] = (value,) if isinstance(value, str) else tuple(str(v) for v in value)
    return Selection(**values)


def load(path: Path | None, env: Mapping[str, str] | None = None) -> NodeConfig:
    document = read_toml(path)
    table = dict(document.get("nodecache", {}))
    catalogues = tuple(catalogue_source(t, f"[[nodecache.catalogue]] #{i + 1}")
                       for i, t in enumerate(table.pop("catalogue", [])))
    selection = _selection(table.pop("select", {}))
    provision_table = dict(table.pop("provision", {}))
    allow = _selection(provision_table.pop("allow", {}), "[nodecache.provision.allow]")
    provision = load_section(ProvisionConfig, "nodecache_provision", provision_table, env, allow=allow)
    return load_section(NodeConfig, "nodecache", table, env, catalogues=catalogues, select=selection,
                        provision=provision)
