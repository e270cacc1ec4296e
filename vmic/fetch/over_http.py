"""Plain HTTP download of an image (a list without torrents, e.g. a partner's), resumable.

The bytes go to ``<data>/<sha512>.part``; a broken transfer keeps what arrived and the
next attempt asks for the rest with ``Range``. Chunks of zeros are left as holes. At
most ``hv:size`` bytes are taken (a server sending endless data is cut off). Complete,
the part file is renamed to ``<data>/<sha512>``; staging then verifies it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

import aiohttp

from vmic.imagelist.model import Image
from vmic.sparse import is_zero

from ..errors import FetchFailed


async def fetch_http(session: aiohttp.ClientSession, image: Image, data_dir: Path,
                     progress: Callable[[int], None]) -> Path:
    target = data_dir / image.sha512
    if target.is_file() and target.stat().st_size == image.size:
        return target
    if not image.uri.startswith(("http://", "https://")):
        raise FetchFailed(f"image {image.identifier}: hv:uri {image.uri!r} is not an http(s) URL")
    part = data_dir / f"{image.sha512}.part"
    have = part.stat().st_size if part.exists() else 0
    if have > image.size:
        part.unlink()
        have = 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        async with session.get(image.uri, headers=headers) as response:
            if response.status == 200:
                have = 0  # the server ignored Range (or nothing was there): from the start
            elif response.status != 206:
                raise FetchFailed(f"image {image.identifier}: {image.uri} answered HTTP {response.status}")
            fd = os.open(part, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.ftruncate(fd, have)
                async for chunk in response.content.iter_any():
                    if have + len(chunk) > image.size:
                        part.unlink()
                        raise FetchFailed(f"image {image.identifier}: the server sent more than hv:size "
                                          f"({image.size} bytes); discarded")
                    if is_zero(chunk):  # left a hole
                        await asyncio.to_thread(os.ftruncate, fd, have + len(chunk))
                    else:
                        await asyncio.to_thread(os.pwrite, fd, chunk, have)
                    have += len(chunk)
                    progress(have)
                await asyncio.to_thread(os.fsync, fd)
            finally:
                os.close(fd)
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        raise FetchFailed(f"image {image.identifier}: transfer from {image.uri} broke at {have} of "
                          f"{image.size} bytes ({exc or type(exc).__name__}); resumes at the next attempt") from None
    if have < image.size:
        raise FetchFailed(f"image {image.identifier}: transfer ended at {have} of {image.size} bytes; "
                          "resumes at the next attempt")
    os.rename(part, target)
    return target
