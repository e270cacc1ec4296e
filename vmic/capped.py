"""Reading an HTTP answer with a size cap: every read from the network has one.

    body = await read_capped(response, MAX_LIST_BYTES, "the signed list", ListTooLarge)

A declared ``Content-Length`` over the cap is refused before a byte is read; without
one, reading stops at the first byte past the cap. Either way ``error`` says how much
was allowed, and nothing read is returned.
"""

from __future__ import annotations

import aiohttp

from .errors import VmicError

#: signed image lists (a list of thousands of images is a few MiB)
MAX_LIST_BYTES = 16 * 2**20
#: torrents of images (about 2,048 pieces: some 40 KiB)
MAX_TORRENT_BYTES = 4 * 2**20


async def read_capped(response: aiohttp.ClientResponse, limit: int, what: str,
                      error: type[VmicError]) -> bytes:
    declared = response.content_length
    if declared is not None and declared > limit:
        raise error(f"{what} is {declared} bytes, more than the {limit} this reads")
    chunks: list[bytes] = []
    total = 0
    async for chunk in response.content.iter_chunked(2**16):
        total += len(chunk)
        if total > limit:
            raise error(f"{what} is more than the {limit} bytes this reads")
        chunks.append(chunk)
    return b"".join(chunks)
