"""Where a peer sits: its site and rack, from a map of subnets. Pure: no I/O.

Configured as ``{"site/rack": ["10.1.0.0/24", ...], ...}``; an address in no subnet
is in no rack and no site, and so never "near" anyone.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from vmic.errors import ConfigError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Location:
    site: str | None = None
    rack: str | None = None

    def distance(self, other: Location) -> int:
        """0: same rack, 1: same site, 2: elsewhere (or unknown)."""
        if self.rack is not None and self.site == other.site and self.rack == other.rack:
            return 0
        if self.site is not None and self.site == other.site:
            return 1
        return 2


@dataclass(frozen=True)
class Topology:
    subnets: tuple[tuple[Network, Location], ...] = field(default_factory=tuple)

    @classmethod
    def from_config(cls, table: dict[str, list[str]]) -> Topology:
        subnets = []
        for place, networks in table.items():
            site, _, rack = place.partition("/")
            if not site or not rack:
                raise ConfigError(f"topology: {place!r} must be written site/rack")
            for network in networks:
                try:
                    subnets.append((ipaddress.ip_network(network), Location(site, rack)))
                except ValueError:
                    raise ConfigError(f"topology: {network!r} is not a subnet") from None
        # the most specific subnet wins
        subnets.sort(key=lambda entry: entry[0].prefixlen, reverse=True)
        return cls(tuple(subnets))

    def locate(self, ip: str) -> Location:
        address = ipaddress.ip_address(ip)
        for network, location in self.subnets:
            if address.version == network.version and address in network:
                return location
        return Location()
