"""Who may read what the node keeps: VM disks, context ISOs (passwords, keys), the state
database, downloads and resume data are root's (or the service user's) alone.

    private_dir(path)              0700: downloads, torrents, scratch
    private_dir(path, TRAVERSE)    0711: the cache and VM directories, which a hypervisor
                                   running as another user (libvirt's qemu) must pass
                                   through to open its own (chowned) files, but not list
    private_file(path)             a new file of mode 0600, opened for writing
    write_private(path, data)      a 0600 file replaced whole (state files)

Staged bases stay 0444 in a 0755 directory: every VM's disk reads through them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

TRAVERSE = 0o711


def private_dir(path: Path, mode: int = 0o700) -> Path:
    """``path`` made (with its parents) and set to ``mode``, also if it existed before."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, mode)
    return path


def private_file(path: Path) -> BinaryIO:
    """``path`` created 0600 (truncated if it exists, and set to 0600 again) for writing."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "wb")


def write_private(path: Path, data: bytes) -> None:
    """``path`` replaced by ``data`` at once (a temporary file, fsync, rename): a crash
    leaves the old file or the new one, never half of one; 0600."""
    temporary = path.with_name(f".{path.name}.tmp")
    with private_file(temporary) as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)
