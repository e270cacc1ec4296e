"""The node daemon's composition root: every part is built here, once, and injected.
Nothing else in ``nodecache`` constructs its own collaborators; a test builds any one
part with fakes of its neighbours, or the whole node with :func:`build`.

    config  -> state (SQLite), metrics, HTTP session
            -> storage (file or LVM: the one place that chooses), swarm, fetcher
            -> lists (a follower per catalogue), jobs, cache store, image keeper
            -> hypervisor (made on first use), provisioner
            -> Node
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from vmic.fetch.fetcher import Fetcher
from vmic.fetch.swarm import Swarm
from vmic.follow import ListFollower, follower_session
from vmic.preheat import USER_AGENT_PREFIX
from vmic.private import TRAVERSE, private_dir

from .cache import CacheStore
from .config import NodeConfig
from .jobs import JobRunner
from .keeper import ImageKeeper
from .lists import CatalogueLists
from .metrics import Metrics
from .node import Node
from .planner import Policy
from .provision.hypervisors import Hypervisor, LibvirtHypervisor, QemuHypervisor
from .provision.provisioner import Provisioner
from .state import State
from .storage import Storage, build_storage

log = logging.getLogger("nodecache")


def hypervisor_factory(config: NodeConfig) -> Callable[[], Hypervisor]:
    provision = config.provision
    if provision.hypervisor == "libvirt":
        return lambda: LibvirtHypervisor(provision.libvirt_uri)
    own_scope = provision.vm_scope == "systemd" or (provision.vm_scope == "auto" and systemd_runs_this_host())
    return lambda: QemuHypervisor(config.vm_dir / "run", provision.qemu, own_scope)


def systemd_runs_this_host() -> bool:
    """sd_booted(3): systemd is PID 1 (and ``systemd-run`` there to ask it for a scope)."""
    return Path("/run/systemd/system").is_dir() and shutil.which("systemd-run") is not None


async def build(config: NodeConfig, storage: Storage | None = None, clock: Callable[[], float] = time.monotonic
                ) -> Node:
    """The node for ``config`` (not started). ``storage``: instead of the configured one."""
    root = config.cache_dir
    private_dir(root, TRAVERSE)
    state = await State.open(root / "state.db")
    metrics = Metrics()
    http = follower_session((source.tls_ca for source in config.catalogues),
                            user_agent=USER_AGENT_PREFIX + config.node_name)  # the catalogue learns its name
    storage = storage or build_storage(config)
    swarm = Swarm(root / "data", root / "torrents", config.listen, config.upload_limit, config.download_limit,
                  config.web_seed, USER_AGENT_PREFIX + config.node_name,
                  verify_https=not any(source.tls_ca for source in config.catalogues))
    fetcher = Fetcher(swarm, http, root / "data", root / "torrents", metrics.http_bytes.inc)
    lists = CatalogueLists({source.url: ListFollower(source, log) for source in config.catalogues}, state, metrics)
    runner = JobRunner(state, storage, fetcher, metrics, lists.version, config.parallel, config.seed, clock)
    cache = CacheStore(state, storage, fetcher, metrics, runner.cancel, config.capacity, config.high_watermark,
                       config.low_watermark)
    keeper = ImageKeeper(lists, runner, cache, state)
    provisioner = Provisioner(keeper, state, storage, hypervisor_factory(config), config.provision, config.vm_dir)
    policy = Policy(config.select, config.node_name, config.retry_after, config.torrent_wait)
    return Node(config, policy, state, metrics, storage, swarm, http, fetcher, lists, runner, cache, keeper,
                provisioner, clock)
