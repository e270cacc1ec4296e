"""An aiohttp client for the catalogue API: what ``vmic publish``/``list``/``revoke`` use,
and what node daemons and partner sites use to read lists.

    async with CatalogueClient("http://127.0.0.1:8470", token) as client:
        image = await client.upload(path, request, progress=...)
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import aiohttp

from .errors import RemoteError, VmicError
from .extent_stream import MEDIA_TYPE as EXTENTS
from .extent_stream import encode
from .sparse import Zeros, runs

Progress = Callable[[int], None]  #: called with the number of bytes done so far
READ_CHUNK = 4 * 2**20


class ConnectionFailed(VmicError):
    status = 503
    code = "connection_failed"


@dataclass(frozen=True)
class Fetched:
    body: bytes
    etag: str | None
    not_modified: bool = False


def tls_context(tls_ca: Path | None = None, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext | None:
    """For HTTPS catalogues: trust ``tls_ca`` besides the system's CAs (as every daemon's
    ``tls_ca``) and present a client certificate (``cert`` and ``key``) if given. None
    when nothing is given."""
    if tls_ca is None and cert is None:
        return None
    from .catalogue_source import tls_context as trusting

    context = trusting([tls_ca])
    if cert is not None:
        try:
            context.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            from .errors import ConfigError

            raise ConfigError(f"cannot load client certificate {cert} / key {key}: {exc}") from None
    return context


async def _raise_for(response: aiohttp.ClientResponse) -> None:
    if response.status < 400:
        return
    text = await response.text()
    try:
        body = json.loads(text)
        raise RemoteError(body["message"], response.status, body.get("error", "remote_error"))
    except (ValueError, KeyError, TypeError):
        raise RemoteError(f"HTTP {response.status}: {text[:200]}", response.status) from None


class CatalogueClient:
    def __init__(self, url: str, token: str | None = None, timeout: float = 60.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout)
        self._ssl = ssl_context
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> CatalogueClient:
        connector = aiohttp.TCPConnector(ssl=self._ssl) if self._ssl is not None else None
        self._session = aiohttp.ClientSession(timeout=self._timeout, connector=connector)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._session is not None
        await self._session.close()

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {"Tus-Resumable": "1.0.0"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return {**headers, **(extra or {})}

    async def _request(self, method: str, path: str, **kwargs: Any) -> tuple[int, dict[str, str], bytes]:
        assert self._session is not None, "use 'async with CatalogueClient(...)'"
        url = path if path.startswith(("http://", "https://")) else self.url + path
        try:
            async with self._session.request(method, url, headers=self._headers(kwargs.pop("headers", None)),
                                             **kwargs) as response:
                await _raise_for(response)
                return response.status, dict(response.headers), await response.read()
        except aiohttp.ClientError as exc:
            raise ConnectionFailed(f"cannot reach {url}: {exc}") from None

    # --- reading ---------------------------------------------------------------------

    async def fetch(self, path: str, etag: str | None = None) -> Fetched:
        """GET with If-None-Match; ``path`` may be a full URL."""
        headers = {"If-None-Match": etag} if etag else {}
        status, resp_headers, body = await self._request("GET", path, headers=headers)
        return Fetched(body, resp_headers.get("ETag"), not_modified=status == 304)

    async def images(self) -> list[dict[str, Any]]:
        _, _, body = await self._request("GET", "/api/v1/images")
        return cast("list[dict[str, Any]]", json.loads(body))

    async def revoke(self, identifier: str) -> dict[str, Any]:
        _, _, body = await self._request("DELETE", f"/api/v1/images/{identifier}")
        return cast("dict[str, Any]", json.loads(body))

    async def restore(self, identifier: str) -> dict[str, Any]:
        _, _, body = await self._request("POST", f"/api/v1/images/{identifier}/restore")
        return cast("dict[str, Any]", json.loads(body))

    async def preheat(self, identifier: str, target: dict[str, Any], force: bool = False) -> dict[str, Any]:
        """``force``: name nodes the tracker has not heard of yet."""
        path = f"/api/v1/images/{identifier}/preheat" + ("?force=true" if force else "")
        _, _, body = await self._request("POST", path, json=target)
        return cast("dict[str, Any]", json.loads(body))

    async def preheat_status(self, identifier: str) -> dict[str, Any]:
        _, _, body = await self._request("GET", f"/api/v1/images/{identifier}/preheat")
        return cast("dict[str, Any]", json.loads(body))

    async def uploads(self) -> list[dict[str, Any]]:
        _, _, body = await self._request("GET", "/api/v1/uploads")
        return cast("list[dict[str, Any]]", json.loads(body))

    async def cancel_upload(self, upload_id: str) -> None:
        await self._request("DELETE", f"/api/v1/uploads/{upload_id}")

    # --- partner subscriptions (admin token) -----------------------------------------

    async def subscriptions(self) -> list[dict[str, Any]]:
        _, _, body = await self._request("GET", "/api/v1/subscriptions")
        return cast("list[dict[str, Any]]", json.loads(body))

    async def subscribe(self, request: dict[str, Any]) -> dict[str, Any]:
        _, _, body = await self._request("POST", "/api/v1/subscriptions", json=request)
        return cast("dict[str, Any]", json.loads(body))

    async def unsubscribe(self, name: str) -> dict[str, Any]:
        _, _, body = await self._request("DELETE", f"/api/v1/subscriptions/{name}")
        return cast("dict[str, Any]", json.loads(body))

    async def sync(self, name: str) -> dict[str, Any]:
        _, _, body = await self._request("POST", f"/api/v1/subscriptions/{name}/sync")
        return cast("dict[str, Any]", json.loads(body))

    # --- uploading (tus 1.0 core) ----------------------------------------------------

    async def start_upload(self, request: dict[str, Any]) -> str:
        _, headers, _ = await self._request("POST", "/api/v1/uploads", json=request)
        return headers["Location"]

    async def upload_offset(self, location: str) -> int:
        _, headers, _ = await self._request("HEAD", location)
        return int(headers["Upload-Offset"])

    async def send(self, location: str, path: Path, offset: int, progress: Progress | None = None,
                   end: int | None = None, sha512: str | None = None, sparse: bool = True) -> dict[str, Any] | None:
        """PATCH the file's bytes from ``offset`` to ``end`` (its size if None); the image
        record when that completed the upload. ``sparse``: as extents that leave zeros out
        (:mod:`vmic.extent_stream`), else the bytes themselves (tus). ``sha512``: the file's
        hash, sent along (``Upload-Sha512``) for the catalogue to check."""
        end = path.stat().st_size if end is None else end
        headers = {"Upload-Offset": str(offset)}
        if sha512 is not None:
            headers["Upload-Sha512"] = sha512
        data: AsyncIterator[bytes]
        if sparse:
            headers["Content-Type"] = EXTENTS
            data = _extent_chunks(path, offset, end, progress)
        else:
            headers.update({"Content-Type": "application/offset+octet-stream", "Content-Length": str(end - offset)})
            data = _file_chunks(path, offset, end, progress)
        status, _, body = await self._request("PATCH", location, data=data, headers=headers)
        return json.loads(body) if status == 201 else None

    async def upload(self, path: Path, request: dict[str, Any], location: str | None = None,
                     progress: Progress | None = None, retries: int = 5,
                     on_location: Callable[[str], None] | None = None,
                     sha512: asyncio.Future[str] | None = None, sparse: bool = True) -> dict[str, Any]:
        """Upload ``path``, resuming at ``location`` if given; retries dropped connections.

        Zeros are left out (``sparse``) unless the catalogue does not take extents. With
        ``sha512``, the file's hash still being computed (hashing while sending), all but
        the last byte go at once and the last waits for the hash and carries it."""
        if location is None:
            location = await self.start_upload(request)
            if on_location:
                on_location(location)
        size = path.stat().st_size
        failures = 0
        while True:
            offset = await self.upload_offset(location)
            if progress:
                progress(offset)
            try:
                if sha512 is not None and offset < size - 1:
                    await self.send(location, path, offset, progress, end=size - 1, sparse=sparse)
                    continue
                image = await self.send(location, path, offset, progress, sparse=sparse,
                                        sha512=await sha512 if sha512 is not None else None)
            except ConnectionFailed:
                failures += 1
                if failures > retries:
                    raise
                await asyncio.sleep(min(2.0**failures, 30.0))
                continue
            except RemoteError as exc:
                if exc.status != 415 or not sparse:
                    raise
                sparse = False  # a catalogue that takes only plain bytes
                continue
            if image is not None:
                return image


async def _file_chunks(path: Path, offset: int, end: int, progress: Progress | None) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    fd = os.open(path, os.O_RDONLY)
    try:
        done = offset
        while done < end:
            block = await loop.run_in_executor(None, os.pread, fd, min(READ_CHUNK, end - done), done)
            if not block:
                return
            done += len(block)
            yield block
            if progress:
                progress(done)
    finally:
        os.close(fd)


async def _extent_chunks(path: Path, offset: int, end: int, progress: Progress | None) -> AsyncIterator[bytes]:
    """The extents body for ``[offset, end)`` of ``path``: holes and zero blocks never read
    or sent. Each block is read and checked in a thread (the event loop stays free)."""
    loop = asyncio.get_running_loop()
    fd = os.open(path, os.O_RDONLY)
    try:
        pieces = runs(fd, offset, end)
        done = offset
        while (run := await loop.run_in_executor(None, next, pieces, None)) is not None:
            for chunk in encode([run]):
                yield chunk
            done += run.length if isinstance(run, Zeros) else len(run)
            if progress:
                progress(done)
    finally:
        os.close(fd)
