"""A partner site simulator (after python-tuf's RepositorySimulator): a real HTTP server
on loopback that serves a signed image list and image bytes, and misbehaves on demand.

    sim = await PartnerSimulator.start(keys)
    identifier = sim.add_image(b"bytes")
    sim.publish()                       # sign and serve a new list version
    sim.served = b"anything"            # serve other bytes at /imagelist (tampering)
    sim.endless = True                  # or an endless list
    sim.cut_after = 1000                # the next image transfer breaks after 1000 bytes
    sim.torrents = tmp_dir              # lists name a torrent per image (web seed: this server)
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from support import free_port

from vmic.imagelist.model import Endorser, Image, ImageList
from vmic.imagelist.smime import Signer
from vmic.pki import KeyPaths
from vmic.torrents import make_torrent


@dataclass
class PartnerSimulator:
    signer: Signer
    runner: web.AppRunner
    url: str
    list_identifier: str = field(default_factory=lambda: str(uuid.uuid4()))
    version: int = 0
    images: dict[str, bytes] = field(default_factory=dict)
    metadata: dict[str, dict[str, str]] = field(default_factory=dict)
    #: what GET /imagelist answers with
    served: bytes = b""
    #: GET /imagelist streams spaces without end (up to 1 GiB, or until the reader gives up)
    endless: bool = False
    #: GET /imagelist answers 503 (the catalogue is down)
    down: bool = False
    #: how many GET /imagelist were answered 304 Not Modified (If-None-Match matched the ETag)
    not_modified: int = 0
    #: the next image transfer sends this many bytes, then the connection breaks
    cut_after: int | None = None
    #: serve these bytes instead of an image's own (a publisher mismatch)
    wrong_bytes: dict[str, bytes] = field(default_factory=dict)
    #: Range headers received, per image
    ranges: list[str | None] = field(default_factory=list)
    history: list[bytes] = field(default_factory=list)
    #: if set, every image gets a torrent of the bytes served (made in this directory)
    torrents: Path | None = None
    torrent_files: dict[str, bytes] = field(default_factory=dict)

    @classmethod
    async def start(cls, keys: KeyPaths) -> PartnerSimulator:
        port = free_port()
        app = web.Application()
        sim = cls(Signer.load(keys.cert, keys.key), web.AppRunner(app), f"http://127.0.0.1:{port}")
        app.router.add_get("/imagelist", sim._imagelist)
        app.router.add_get("/images/{identifier}.torrent", sim._torrent)
        app.router.add_get("/images/{identifier}", sim._image)
        await sim.runner.setup()
        await web.TCPSite(sim.runner, "127.0.0.1", port).start()
        return sim

    async def stop(self) -> None:
        await self.runner.cleanup()

    def add_image(self, data: bytes, **metadata: str) -> str:
        identifier = str(uuid.uuid4())
        self.images[identifier] = data
        self.metadata[identifier] = metadata
        return identifier

    def _torrent_fields(self, identifier: str, sha512: str) -> dict[str, str]:
        """A torrent of the bytes this server serves for the image (the wrong ones, if set),
        its one file named by the listed sha512, as a catalogue's would be."""
        if self.torrents is None:
            return {}
        path = self.torrents / sha512
        path.write_bytes(self.wrong_bytes.get(identifier, self.images[identifier]))
        torrent = make_torrent(path, f"{self.url}/images/{identifier}")
        self.torrent_files[identifier] = torrent.data
        return {"vmic:btih": torrent.btih, "vmic:torrent": f"{self.url}/images/{identifier}.torrent"}

    def build(self, **changes: object) -> ImageList:
        now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        images = tuple(
            Image(identifier=i, uri=f"{self.url}/images/{i}", size=len(data), sha512=hashlib.sha512(data).hexdigest(),
                  version="1", title=self.metadata[i].get("title", "partner image"), os=self.metadata[i].get("os", ""),
                  extra={**{k: v for k, v in self.metadata[i].items() if ":" in k},
                         **self._torrent_fields(i, hashlib.sha512(data).hexdigest())})
            for i, data in self.images.items()
        )
        image_list = ImageList(identifier=self.list_identifier, version=self.version, created=now,
                               expires=now + dt.timedelta(days=1),
                               endorser=Endorser(self.signer.dn, self.signer.ca), images=images, title="partner")
        return image_list.replace(**changes)

    def sign(self, image_list: ImageList) -> bytes:
        return self.signer.sign(image_list.to_bytes())

    def publish(self, **changes: object) -> bytes:
        """Sign the images as a new list version and serve it."""
        self.version += 1
        self.served = self.sign(self.build(**changes))
        self.history.append(self.served)
        return self.served

    async def _imagelist(self, request: web.Request) -> web.StreamResponse:
        if self.down:
            return web.Response(status=503, text="down for maintenance")
        if not self.endless:
            etag = '"' + hashlib.sha256(self.served).hexdigest()[:32] + '"'
            if request.headers.get("If-None-Match") == etag:
                self.not_modified += 1
                return web.Response(status=304, headers={"ETag": etag})
            return web.Response(body=self.served, content_type="text/plain", headers={"ETag": etag})
        response = web.StreamResponse()  # chunked: no Content-Length to refuse it by
        await response.prepare(request)
        try:
            for _ in range(2**14):  # bounded: 1 GiB at most
                await response.write(b" " * 2**16)
        except (ConnectionError, RuntimeError):
            pass  # the reader stopped reading
        return response

    async def _torrent(self, request: web.Request) -> web.Response:
        identifier = request.match_info["identifier"]
        if identifier not in self.torrent_files:
            raise web.HTTPNotFound()
        return web.Response(body=self.torrent_files[identifier], content_type="application/x-bittorrent")

    async def _image(self, request: web.Request) -> web.StreamResponse:
        identifier = request.match_info["identifier"]
        if identifier not in self.images:
            raise web.HTTPNotFound()
        data = self.wrong_bytes.get(identifier, self.images[identifier])
        range_header = request.headers.get("Range")
        self.ranges.append(range_header)
        start, end = 0, len(data) - 1
        if range_header:  # "bytes=N-" (resuming) or "bytes=N-M" (a web seed's piece)
            first, _, last = range_header.removeprefix("bytes=").partition("-")
            start, end = int(first), min(int(last) if last else end, end)
        response = web.StreamResponse(status=206 if range_header else 200)
        response.content_length = end + 1 - start
        if range_header:
            response.headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        await response.prepare(request)
        if self.cut_after is not None:
            cut, self.cut_after = self.cut_after, None
            await response.write(data[start:start + cut])
            assert request.transport is not None
            request.transport.abort()  # the partner goes away mid-transfer
            return response
        await response.write(data[start:end + 1])
        await response.write_eof()
        return response
