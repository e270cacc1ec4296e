"""Where the node's files are by default (no imports: the CLIs read this before parsing)."""

from __future__ import annotations

from pathlib import Path

DEFAULT_CONFIG = Path("/etc/vmic/nodecache.toml")
