"""Sizes, durations and listen addresses as every vmic config file and API spells them:
pure parsers, one spelling for each idea in every daemon.

    parse_size("50M") == 50 * 2**20      # K, M, G, T: powers of 1024; a bare number: bytes
    parse_duration("90m") == 5400.0      # s, m, h, d; a bare number: seconds
    parse_listen("[::1]:8470") == ("::1", 8470)

Each raises ValueError with a message that names the value (callers add where it came from).
"""

from __future__ import annotations

import math
import re
from typing import Any

_SIZE = re.compile(r"\s*(\d{1,15}(?:\.\d{1,9})?)\s*([KMGT]?)(?:i?B)?\s*", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
_DURATION = re.compile(r"\s*(\d{1,12}(?:\.\d{1,9})?)\s*([smhd]?)\s*")
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_SIZE = 2**60
MAX_DURATION = 10 * 365 * 86400.0  #: ten years
_LISTEN = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9_.-]*)):(?P<port>\d{1,5})")


def parse_size(value: Any) -> int:
    """``123``, ``"64M"``, ``"1.5G"``, ``"2GiB"`` -> bytes (0 to 2**60)."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a size (e.g. 500G)")
    if isinstance(value, int):
        size = value
    else:
        match = _SIZE.fullmatch(str(value)[:64])
        if not match:
            raise ValueError(f"{str(value)[:64]!r} is not a size (e.g. 500G, 64M, 4096)")
        size = int(float(match.group(1)) * _SIZE_UNITS[match.group(2).upper()])
    if not 0 <= size <= MAX_SIZE:
        raise ValueError(f"{value!r} is out of range (0 to 1024 P)")
    return size


def parse_duration(value: Any) -> float:
    """``3600``, ``"90s"``, ``"90m"``, ``"48h"``, ``"2d"`` -> seconds (more than 0, at most ten years)."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration (e.g. 48h, 90m, 30s)")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _DURATION.fullmatch(str(value)[:64])
        if not match:
            raise ValueError(f"{str(value)[:64]!r} is not a duration (e.g. 48h, 90m, 30s)")
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{value!r} is not a positive duration")
    if seconds > MAX_DURATION:
        raise ValueError(f"{value!r} is more than ten years")
    return seconds


def parse_wait(value: Any) -> float:
    """A duration that may be 0 (no wait at all: ``retry_after = 0``)."""
    if value in (0, 0.0, "0", "0s") and not isinstance(value, bool):
        return 0.0
    return parse_duration(value)


def parse_listen(value: Any) -> tuple[str, int]:
    """``"127.0.0.1:8470"``, ``"[::1]:8470"``, ``":6881"`` (every address) -> (host, port).
    Port 0: any free port."""
    match = _LISTEN.fullmatch(str(value)[:300])
    if not match:
        raise ValueError(f"{str(value)[:64]!r} is not host:port (e.g. 127.0.0.1:8470, [::1]:8470, 0.0.0.0:6881)")
    port = int(match.group("port"))
    if port > 65535:
        raise ValueError(f"{value!r}: port must be at most 65535")
    host = match.group("v6") if match.group("v6") is not None else match.group("host") or "0.0.0.0"
    return host, port


def parse_optional_listen(value: Any) -> tuple[str, int] | None:
    """As :func:`parse_listen`, or None for "" (a listener that is off)."""
    return None if value in ("", None) else parse_listen(value)


def format_listen(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
