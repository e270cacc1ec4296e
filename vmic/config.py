"""Configuration from a TOML file plus environment variables, for every vmic daemon.

Each daemon describes its settings as a frozen dataclass; :func:`load_section` fills
one from the ``[section]`` table of a TOML file, then lets environment variables named
``VMIC_<SECTION>_<FIELD>`` override scalar fields (what a systemd unit or a container
sets). Unknown keys are an error: a typo must not silently fall back to a default, and a
setting spelled as in an older release names its new spelling.

One language for every daemon: a field typed :data:`Size` takes ``"50M"`` or bytes, one
typed :data:`Duration` takes ``"90s"``, ``"5m"``, ``"48h"``, ``"7d"`` or seconds, one typed
:data:`Listen` takes ``"host:port"`` (see :mod:`vmic.units`).
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar, cast

from .errors import ConfigError
from .units import parse_duration, parse_listen, parse_optional_listen, parse_size, parse_wait

T = TypeVar("T")

Size = Annotated[int, parse_size]  #: bytes: 4096, "64M", "1.5G"
Duration = Annotated[float, parse_duration]  #: seconds: 30, "90s", "5m", "48h", "7d"
Wait = Annotated[float, parse_wait]  #: a Duration that may be 0 (no wait)
Listen = Annotated[str, parse_listen]  #: "host:port", "[::1]:port"
OptionalListen = Annotated[str, parse_optional_listen]  #: the same, or "" (off)


class Listens:
    """``host`` and ``port`` of a config's ``listen`` (a mixin of the config dataclasses)."""

    listen: str

    @property
    def host(self) -> str:
        return parse_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return parse_listen(self.listen)[1]


#: spellings of earlier releases -> what to write now (an error names it)
RENAMED = {
    "host": 'listen = "HOST:PORT"',
    "port": 'listen = "HOST:PORT"',
    "catalogue_url": "url in the catalogue table",
    "catalogue_ca": "ca in the catalogue table",
    "endorser_dn": "endorser_dn in the catalogue table",
    "poll_seconds": 'poll_interval (e.g. "60s")',
    "retry_seconds": 'retry_after (e.g. "60s")',
    "list_lifetime_hours": 'list_lifetime (e.g. "7d")',
    "upload_expiry_hours": 'upload_expiry (e.g. "24h")',
}


def read_toml(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config {path} is not valid TOML: {exc}") from None


def _convert(value: Any, kind: Any, where: str) -> Any:
    origin = typing.get_origin(kind)
    if origin is Annotated:
        parse = kind.__metadata__[0]
        try:
            parse(value)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        return str(value) if parse in (parse_listen, parse_optional_listen) else parse(value)
    if origin in (typing.Union, types.UnionType):
        options = [k for k in typing.get_args(kind) if k is not type(None)]
        if value is None or value == "":
            return None
        return _convert(value, options[0], where)
    try:
        if kind is Path:
            return Path(os.path.expanduser(str(value)))
        if kind is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if kind in (int, float, str):
            if kind is not str and isinstance(value, bool):
                raise ValueError(value)
            return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {value!r} is not a valid {getattr(kind, '__name__', kind)}") from None
    return value


def check_renamed(section: str, names: Iterable[str]) -> None:
    """A ConfigError naming the new spelling of the first setting spelled as in an earlier release."""
    renamed = sorted(name for name in names if name in RENAMED)
    if renamed:
        raise ConfigError(f"[{section}] {renamed[0]} is now spelled {RENAMED[renamed[0]]}")


def load_section(
    cls: type[T],
    section: str,
    table: Mapping[str, Any],
    env: Mapping[str, str] | None = None,
    **fixed: Any,
) -> T:
    """Build dataclass ``cls`` from ``table``, then ``VMIC_<SECTION>_<FIELD>`` variables.

    ``fixed`` are values computed by the caller (e.g. parsed sub-tables).
    """
    env = os.environ if env is None else env
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {f.name: f for f in dataclasses.fields(cast(Any, cls))}  # cls: any dataclass type (T is unbounded)
    unknown = set(table) - set(fields) - set(fixed)
    check_renamed(section, unknown)
    if unknown:
        raise ConfigError(f"[{section}]: unknown setting(s) {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    for name in fields:
        if name in fixed:
            values[name] = fixed[name]
            continue
        env_name = f"VMIC_{section.upper()}_{name.upper()}"
        if env_name in env:
            values[name] = _convert(env[env_name], hints[name], env_name)
        elif name in table:
            values[name] = _convert(table[name], hints[name], f"[{section}] {name}")
    missing = [
        name
        for name, f in fields.items()
        if name not in values and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        name = missing[0]
        raise ConfigError(f"[{section}] {name} is not set (or set VMIC_{section.upper()}_{name.upper()})")
    return cls(**values)
