"""What a VM asks for, checked before anything is made: pure, no I/O."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vmic import units
from vmic.errors import BadRequest

#: VM names become file, volume and domain names: a strict alphabet, no path tricks
#: every pattern is used with fullmatch ("$" would let a final newline through)
NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
CONTEXT_KEY = re.compile(r"[A-Z_][A-Z0-9_]{0,63}")


def parse_duration(value: Any, what: str = "ttl") -> float:
    """``3600``, ``"90m"``, ``"48h"``, ``"2d"`` -> seconds (as in every config: :mod:`vmic.units`)."""
    try:
        return units.parse_duration(value)
    except ValueError as exc:
        raise BadRequest(f"{what}: {exc}") from None


def parse_cpuset(value: Any, host_cpus: int = 1024) -> tuple[int, ...]:
    """``"0,2-3"`` -> (0, 2, 3); every CPU below ``host_cpus`` (the host's), or refused."""
    if value in (None, "", []):
        return ()
    if isinstance(value, list):
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise BadRequest(f"pin: {str(value)[:80]!r} is not a list of CPU numbers")
        ranges = [(v, v) for v in value]
    else:
        text = str(value)
        if len(text) > 4096:
            raise BadRequest(f"pin: a CPU list of {len(text)} characters is too long")
        ranges = []
        for part in text.split(","):
            match = re.fullmatch(r"\s*(\d{1,6})(?:-(\d{1,6}))?\s*", part)
            if not match:
                raise BadRequest(f"pin: {str(value)[:80]!r} is not a CPU list (e.g. 0,2-3)")
            first, last = int(match.group(1)), int(match.group(2) or match.group(1))
            if last < first:
                raise BadRequest(f"pin: {part!r} is an empty range")
            ranges.append((first, last))
    for first, last in ranges:  # checked before any range is expanded: "0-100000000" costs nothing
        if first < 0 or last >= host_cpus:
            raise BadRequest(f"pin: CPU {last if last >= host_cpus else first} is not one of this host's "
                             f"{host_cpus} CPUs (0-{host_cpus - 1})")
    return tuple(sorted({cpu for first, last in ranges for cpu in range(first, last + 1)}))


@dataclass(frozen=True)
class VmRequest:
    image: str  #: identifier, or namespace/name (its newest version)
    name: str
    memory_mib: int = 2048
    vcpus: int = 1
    pin: tuple[int, ...] = ()  #: host CPUs, one per vCPU in order (or all vCPUs on these)
    ttl_seconds: float = 48 * 3600
    user_data: str = ""  #: cloud-init user-data (a #cloud-config or a script)
    context: Mapping[str, str] = field(default_factory=dict)  #: HEPiX context.sh variables
    ssh_keys: tuple[str, ...] = ()
    paused: bool = False  #: start with the CPUs stopped (tests; a controller that starts later)

    @classmethod
    def from_json(cls, body: Any, default_ttl: float, default_memory: int, default_vcpus: int,
                  host_cpus: int = 1024) -> VmRequest:
        if not isinstance(body, Mapping):
            raise BadRequest("expected a JSON object")
        for key in ("image", "name"):
            if not isinstance(body.get(key), str) or not body[key]:
                raise BadRequest(f"{key} is required")
        unknown = set(body) - {"image", "name", "memory", "vcpus", "pin", "ttl", "user_data", "context",
                               "ssh_keys", "paused"}
        if unknown:
            raise BadRequest(f"unknown field(s) {', '.join(sorted(unknown))}")
        name = body["name"]
        if not NAME.fullmatch(name):
            raise BadRequest(f"name {name!r}: use 1-63 lowercase letters, digits and '-', starting with a "
                             "letter or digit")
        try:
            memory = int(body.get("memory", default_memory))
            vcpus = int(body.get("vcpus", default_vcpus))
        except (TypeError, ValueError, OverflowError):
            raise BadRequest("memory and vcpus must be integers") from None
        if not 16 <= memory <= 4 * 2**20:
            raise BadRequest(f"memory {memory} MiB is out of range (16 MiB to 4 TiB)")
        if not 1 <= vcpus <= 1024:
            raise BadRequest(f"vcpus {vcpus} is out of range (1 to 1024)")
        pin = parse_cpuset(body.get("pin"), host_cpus)
        context = body.get("context", {})
        if not isinstance(context, Mapping) or not all(isinstance(v, str) for v in context.values()):
            raise BadRequest("context must map names to strings")
        for key in context:
            if not CONTEXT_KEY.fullmatch(key):
                raise BadRequest(f"context variable {key!r}: use A-Z, 0-9 and _ (a shell variable name)")
        ssh_keys = body.get("ssh_keys", [])
        if not isinstance(ssh_keys, list) or not all(isinstance(k, str) and "\n" not in k for k in ssh_keys):
            raise BadRequest("ssh_keys must be a list of one-line public keys")
        user_data = body.get("user_data", "")
        if not isinstance(user_data, str) or len(user_data) > 1 << 20:
            raise BadRequest("user_data must be text of at most 1 MiB")
        return cls(body["image"], name, memory, vcpus, pin,
                   parse_duration(body.get("ttl", default_ttl)), user_data, dict(context), tuple(ssh_keys),
                   bool(body.get("paused", False)))
