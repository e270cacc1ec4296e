"""A lab network on one machine: hosts made of network namespaces on a bridge (for tests
and benchmarks). Needs root and iproute2; traffic stays inside the lab's own subnet.

    with Lab() as lab:                        # bridge 10.231.<n>.1/24 in the root namespace
        node = lab.add_host(upload="200mbit", download="1gbit", delay="1ms")
        subprocess.run(node.command("aria2c", ...))      # runs inside the namespace

The root namespace is on the bridge too (``lab.gateway``): services started there can
bind to it and be reached from every host. Racks (``lab.add_rack(uplink="100mbit")``)
are bridges of their own, joined to the core bridge by one veth pair shaped to
``uplink`` each way, each with its own /26 of addresses (``rack.subnet``), so that
traffic between racks crosses a thin link and a tracker can tell racks apart. ``upload`` shapes what a host sends and
``download`` what it receives (tc tbf on each end of its veth pair), ``delay`` adds
latency (netem; where the kernel lacks it, asking for a delay raises LabUnavailable).
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from dataclasses import dataclass, field

_counter = itertools.count()


class LabUnavailable(RuntimeError):
    """Network namespaces cannot be made here (not root, no iproute2, no rights)."""


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise LabUnavailable(f"ip {' '.join(args)}: {result.stderr.strip()}")


def _tc(*args: str) -> None:
    result = subprocess.run(["tc", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise LabUnavailable(f"tc {' '.join(args)}: {result.stderr.strip()}")


def _shape(device: str, rate: str | None, delay: str | None, namespace: str | None = None) -> None:
    prefix = ["-n", namespace] if namespace else []
    if delay:
        try:
            _tc(*prefix, "qdisc", "add", "dev", device, "root", "handle", "1:", "netem", "delay", delay)
        except LabUnavailable as exc:
            raise LabUnavailable(f"latency needs the kernel's netem qdisc, which this machine lacks ({exc})") from None
        if rate:
            _tc(*prefix, "qdisc", "add", "dev", device, "parent", "1:1", "handle", "10:", "tbf", "rate", rate,
                "burst", "256kb", "latency", "100ms")
    elif rate:
        _tc(*prefix, "qdisc", "add", "dev", device, "root", "tbf", "rate", rate, "burst", "256kb", "latency", "100ms")


@dataclass
class Host:
    name: str
    namespace: str
    address: str
    veth: str  #: its end of the veth pair, in the root namespace

    def command(self, *argv: str) -> list[str]:
        """``argv`` run inside this host's namespace."""
        return ["ip", "netns", "exec", self.namespace, *argv]


@dataclass
class Rack:
    name: str
    bridge: str
    uplink: str  #: the core-side end of the link, in the root namespace
    index: int
    subnet: str  #: its /26
    hosts: int = 0


@dataclass
class Lab:
    #: the third octet of 10.231.X.0/24 (one per lab, so labs of parallel runs do not clash)
    subnet: int = field(default_factory=lambda: 1 + (os.getpid() + next(_counter)) % 250)
    hosts: list[Host] = field(default_factory=list)
    racks: list[Rack] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.tag = f"vl{os.getpid() % 10000}{self.subnet}"
        self.bridge = f"{self.tag}br"[:15]
        self.gateway = f"10.231.{self.subnet}.1"

    def __enter__(self) -> Lab:
        if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("tc") is None:
            raise LabUnavailable("network namespaces need root, ip and tc (iproute2)")
        try:
            _ip("link", "add", "name", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
        except LabUnavailable:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add_rack(self, uplink: str) -> Rack:
        """A rack (addresses .64-.127, .128-.191, .192-.255 of the lab's /24; at most three)."""
        index = len(self.racks) + 1
        if index > 3:
            raise LabUnavailable("a lab has at most three racks")
        rack = Rack(name=f"rack{index}", bridge=f"{self.tag}r{index}"[:15], uplink=f"{self.tag}u{index}"[:15],
                    index=index, subnet=f"10.231.{self.subnet}.{64 * index}/26")
        self.racks.append(rack)
        _ip("link", "add", "name", rack.bridge, "type", "bridge")
        _ip("link", "set", rack.bridge, "up")
        inner = f"{self.tag}d{index}"[:15]
        _ip("link", "add", rack.uplink, "type", "veth", "peer", "name", inner)
        _ip("link", "set", rack.uplink, "master", self.bridge, "up")
        _ip("link", "set", inner, "master", rack.bridge, "up")
        _shape(rack.uplink, uplink, None)  # core -> rack
        _shape(inner, uplink, None)  # rack -> core
        return rack

    def add_host(self, upload: str | None = None, download: str | None = None, delay: str | None = None,
                 rack: Rack | None = None) -> Host:
        n = len(self.hosts) + 2
        if rack is None:
            address = f"10.231.{self.subnet}.{n}"
        else:
            rack.hosts += 1
            address = f"10.231.{self.subnet}.{64 * rack.index + rack.hosts}"
        host = Host(name=f"h{n}", namespace=f"{self.tag}h{n}", address=address, veth=f"{self.tag}v{n}"[:15])
        inside = f"{self.tag}i{n}"[:15]
        self.hosts.append(host)
        _ip("netns", "add", host.namespace)
        _ip("link", "add", host.veth, "type", "veth", "peer", "name", inside)
        _ip("link", "set", inside, "netns", host.namespace)
        _ip("link", "set", host.veth, "master", rack.bridge if rack else self.bridge, "up")
        _ip("-n", host.namespace, "addr", "add", f"{host.address}/24", "dev", inside)
        _ip("-n", host.namespace, "link", "set", inside, "up")
        _ip("-n", host.namespace, "link", "set", "lo", "up")
        _shape(inside, upload, delay, host.namespace)  # what the host sends
        _shape(host.veth, download, None)  # what it receives
        return host

    def close(self) -> None:
        for host in self.hosts:
            subprocess.run(["ip", "netns", "del", host.namespace], capture_output=True)
            subprocess.run(["ip", "link", "del", host.veth], capture_output=True)
        self.hosts.clear()
        for rack in self.racks:
            subprocess.run(["ip", "link", "del", rack.uplink], capture_output=True)
            subprocess.run(["ip", "link", "del", rack.bridge], capture_output=True)
        self.racks.clear()
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
