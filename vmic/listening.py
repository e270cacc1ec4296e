"""Listening sockets made before a daemon builds anything: a start that cannot listen (a
port taken, a Unix socket another daemon still answers on) stops there, having changed
nothing (no database opened, no list signed, no socket of a running daemon removed)."""

from __future__ import annotations

import socket
from pathlib import Path

from .errors import ConfigError


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (IPv6 if the host is one), as aiohttp's own."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def claim_unix_socket(path: Path) -> None:
    """Remove a dead daemon's socket at ``path``; refuse (ConfigError) if a daemon answers on it."""
    if not path.exists():
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink(missing_ok=True)  # nobody listens: what a killed daemon left
        return
    finally:
        probe.close()
    raise ConfigError(f"another daemon answers on {path}: stop it first (or set another socket)")
