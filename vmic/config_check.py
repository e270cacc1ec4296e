"""``config check``: what each daemon's command of that name verifies before a start,
without starting anything: the file parses, every setting is known and within bounds
(the loaders), and every file the settings name is there to be read.

Pure apart from ``stat``: it walks the config dataclasses (nested tables and tuples of
them too) and reports the paths that must exist but do not.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from .errors import ConfigError

#: settings naming files or directories that must exist before a start (the others,
#: data and state directories, are created)
MUST_EXIST = frozenset({"ca", "tls_ca", "endorser_cert", "endorser_key", "tls_cert", "tls_key", "tls_client_ca",
                        "database_password_file", "blob_dir"})


def missing_files(config: Any, where: str) -> list[str]:
    """``"[where] name: path"`` for each setting in :data:`MUST_EXIST` whose path is absent."""
    found: list[str] = []
    if not dataclasses.is_dataclass(config):
        return found
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if isinstance(value, Path) and field.name in MUST_EXIST and not value.exists():
            found.append(f"{where} {field.name}: {value} does not exist")
        elif dataclasses.is_dataclass(value):
            found += missing_files(value, f"{where[:-1]}.{field.name}]")
        elif isinstance(value, tuple):
            for index, item in enumerate(value):
                found += missing_files(item, f"{where[:-1]}.{field.name}] #{index + 1}")
    return found


def check(configs: dict[str, Any], path: Path | None) -> str:
    """The one line ``config check`` prints for loaded ``configs`` (by section name), or a
    ConfigError naming the first missing file (and how many more)."""
    missing = [line for section, config in configs.items() for line in missing_files(config, f"[{section}]")]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ConfigError(f"{path or 'defaults'}: {missing[0]}{more}")
    return f"{path or 'defaults'}: {', '.join(f'[{s}]' for s in configs)} ok"
