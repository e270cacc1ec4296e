"""Starting a file's write-back early, so the fsync that makes it durable finds little left.

An upload writes its bytes through the page cache and syncs them once, before the image is
published: with every byte still dirty, that fsync writes all of them at the end (measured:
0.26 s of a 4.6 s publish for 510 MiB of data). :func:`start_writeback` asks the kernel to
start writing a range now, without waiting (Linux ``sync_file_range`` with
``SYNC_FILE_RANGE_WRITE``), so the disk works while the upload goes on. Elsewhere, or if
the call fails, nothing happens: the final fsync still writes and reports everything.
"""

from __future__ import annotations

import ctypes

#: sync_file_range(2): start writing dirty pages of the range, do not wait
SYNC_FILE_RANGE_WRITE = 2
#: a writer starts the write-back of what it wrote each time this much has gathered
EVERY = 16 * 2**20

_libc = ctypes.CDLL(None, use_errno=True)
_sync_file_range = getattr(_libc, "sync_file_range", None)
if _sync_file_range is not None:
    _sync_file_range.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    _sync_file_range.restype = ctypes.c_int


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Start writing ``[offset, offset + length)`` of ``fd`` to disk; return at once."""
    if _sync_file_range is not None and length > 0:
        _sync_file_range(fd, offset, length, SYNC_FILE_RANGE_WRITE)
