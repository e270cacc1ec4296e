"""Reading announce and scrape requests (BEP 3, 23, 7, 48). Pure: no I/O.

The query string is read raw: ``info_hash`` and ``peer_id`` are 20 arbitrary bytes,
percent-encoded, which a text decoder would mangle. Anything malformed raises
:class:`TrackerError` with the reason the client is told (as a bencoded
``failure reason``; a tracker never answers a bad request with a 500).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import parse_qs

from vmic.errors import VmicError

EVENTS = ("started", "completed", "stopped", "")
DEFAULT_NUMWANT = 50
MAX_NUMWANT = 200


class TrackerError(VmicError):
    """A request the tracker refuses; ``message`` is the failure reason sent back."""

    status = 200  # BitTorrent clients read failures from the body of a 200 answer
    code = "tracker_failure"


@dataclass(frozen=True)
class Announce:
    info_hash: bytes
    peer_id: bytes
    ip: str
    port: int
    uploaded: int
    downloaded: int
    left: int
    event: str
    numwant: int
    compact: bool
    no_peer_id: bool

    @property
    def seeding(self) -> bool:
        return self.left == 0


def _raw_query(query_string: str) -> dict[str, list[bytes]]:
    if not query_string.isascii():  # a query string is percent-encoded ASCII (found by the fuzzer)
        raise TrackerError("malformed query string: not ASCII")
    try:
        parsed = parse_qs(query_string, keep_blank_values=True, strict_parsing=False, encoding="latin-1")
    except ValueError as exc:
        raise TrackerError(f"malformed query string: {exc}") from None
    return {key: [v.encode("latin-1") for v in values] for key, values in parsed.items()}


def _one(query: dict[str, list[bytes]], key: str, required: bool = True) -> bytes | None:
    values = query.get(key)
    if not values:
        if required:
            raise TrackerError(f"missing {key}")
        return None
    if len(values) > 1:
        raise TrackerError(f"{key} given more than once")
    return values[0]


def _hash20(value: bytes | None, key: str) -> bytes:
    if value is None or len(value) != 20:
        raise TrackerError(f"{key} must be 20 bytes")
    return value


def _number(query: dict[str, list[bytes]], key: str, default: int | None = None, low: int = 0,
            high: int = 2**63 - 1) -> int:
    raw = _one(query, key, required=default is None)
    if raw is None:
        assert default is not None
        return default
    try:
        value = int(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise TrackerError(f"{key} must be a whole number") from None
    if not low <= value <= high:
        raise TrackerError(f"{key} must be between {low} and {high}")
    return value


def parse_announce(query_string: str, remote_ip: str) -> Announce:
    """An announce from ``remote_ip`` (the connection's address: a client cannot claim another)."""
    query = _raw_query(query_string)
    event = (_one(query, "event", required=False) or b"").decode("latin-1")
    if event not in EVENTS:
        raise TrackerError(f"unknown event {event!r}")
    try:
        ip = str(ipaddress.ip_address(remote_ip))
    except ValueError:
        raise TrackerError("cannot tell the peer's address") from None
    return Announce(
        info_hash=_hash20(_one(query, "info_hash"), "info_hash"),
        peer_id=_hash20(_one(query, "peer_id"), "peer_id"),
        ip=ip,
        port=_number(query, "port", low=1, high=65535),
        uploaded=_number(query, "uploaded", default=0),
        downloaded=_number(query, "downloaded", default=0),
        left=_number(query, "left", default=0),
        event=event,
        numwant=min(_number(query, "numwant", default=DEFAULT_NUMWANT), MAX_NUMWANT),
        compact=_one(query, "compact", required=False) != b"0",
        no_peer_id=_one(query, "no_peer_id", required=False) == b"1",
    )


def parse_scrape(query_string: str) -> list[bytes]:
    """The info hashes asked about (none: the client wants all it may see)."""
    return [_hash20(value, "info_hash") for value in _raw_query(query_string).get("info_hash", [])]
