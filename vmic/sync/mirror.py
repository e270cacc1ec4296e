"""Fetch a partner image's bytes over HTTP into the blob store, verified.

The bytes go to a part file ``uploads/mirror-<identifier>.part`` through the same
hashing writer as uploads; a transfer that breaks keeps what arrived, and the next
attempt asks for the rest with ``Range``. At most ``hv:size`` bytes are taken (a
server sending endless data is cut off), and the blob enters the store only if its
sha512 equals the one in the signed list.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp

from ..catalogue.blobs import BlobStore, HashState
from ..catalogue.uploads import MIRROR_PREFIX
from ..errors import VmicError
from ..imagelist.model import Image


class MirrorError(VmicError):
    status = 502
    code = "mirror_failed"


async def _until_broken(response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """The body as it arrives; a dropped connection just ends it (what arrived is kept)."""
    try:
        async for chunk in response.content.iter_any():
            yield chunk
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return


async def mirror_image(session: aiohttp.ClientSession, blobs: BlobStore, image: Image) -> None:
    """Make the blob of ``image`` present in ``blobs``, or raise :class:`MirrorError`."""
    if blobs.has(image.sha512):
        return
    if not image.uri.startswith(("http://", "https://")):
        raise MirrorError(f"image {image.identifier}: hv:uri {image.uri!r} is not an http(s) URL")
    part_id = MIRROR_PREFIX + image.identifier
    if blobs.part_size(part_id) is None:
        blobs.create_part(part_id)
    state = await blobs.rehash(part_id)
    if state.count > image.size:
        blobs.delete_part(part_id)
        raise MirrorError(f"image {image.identifier}: partial file larger than hv:size; discarded")
    headers = {"Range": f"bytes={state.count}-"} if state.count else {}
    try:
        async with session.get(image.uri, headers=headers) as response:
            if response.status == 200 and state.count:  # the server ignored Range: start again
                blobs.delete_part(part_id)
                blobs.create_part(part_id)
                state = HashState()
            elif response.status not in (200, 206):
                raise MirrorError(f"image {image.identifier}: {image.uri} answered HTTP {response.status}")
            try:
                await blobs.append(part_id, state, _until_broken(response), image.size - state.count)
            except OverflowError:
                blobs.delete_part(part_id)
                raise MirrorError(f"image {image.identifier}: the server sent more than hv:size "
                                  f"({image.size} bytes); discarded") from None
    except aiohttp.ClientError as exc:
        raise MirrorError(f"image {image.identifier}: cannot fetch {image.uri}: {exc}; "
                          f"{state.count} of {image.size} bytes kept, resumes at the next sync") from None
    if state.count < image.size:
        raise MirrorError(f"image {image.identifier}: transfer interrupted at {state.count} of {image.size} bytes; "
                          "resumes at the next sync")
    sha512 = state.hasher.hexdigest()
    if sha512 != image.sha512:
        blobs.delete_part(part_id)
        raise MirrorError(f"image {image.identifier}: bytes do not match the sha512 in the signed list "
                          f"(got {sha512[:16]}..., list says {image.sha512[:16]}...); not imported")
    await blobs.commit(part_id, sha512)
