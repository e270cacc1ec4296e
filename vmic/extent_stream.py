"""The upload body that leaves zeros out: ``Content-Type: application/vnd.vmic.extents``.

A ``PATCH`` of a tus upload normally carries the bytes themselves
(``application/offset+octet-stream``). With this media type it carries records instead,
each a 9-byte header, ``kind`` (one byte) and ``length`` (unsigned 64-bit, big-endian):

- ``D`` (data): ``length`` bytes follow, the image's next bytes;
- ``Z`` (zeros): nothing follows; the image's next ``length`` bytes are zero.

So a 20 GiB image holding 3 GiB of data crosses the network as about 3 GiB. The
catalogue hashes the zeros (the signed sha512 covers every byte) and stores them as a
hole. Pure: :func:`encode` turns runs into bytes, :class:`Decoder` turns received chunks
back into runs, refusing what does not fit (an unknown kind, an empty record); the
upload's own limit refuses runs beyond its length (the whole request undone, as for a
plain body). A body cut inside a data record keeps the bytes that arrived, as a cut
octet-stream body does; the upload resumes from there.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator

from .errors import BadRequest
from .sparse import Run, Zeros

MEDIA_TYPE = "application/vnd.vmic.extents"
HEADER = struct.Struct(">cQ")
DATA, ZEROS = b"D", b"Z"


def encode(runs: Iterable[Run]) -> Iterator[bytes]:
    """The body for ``runs`` (data blocks and Zeros), a record per run."""
    for run in runs:
        if isinstance(run, Zeros):
            if run.length:
                yield HEADER.pack(ZEROS, run.length)
        elif run:
            if len(run) < 65536:  # small: one write
                yield HEADER.pack(DATA, len(run)) + run
            else:  # large: not copied
                yield HEADER.pack(DATA, len(run))
                yield run


class Decoder:
    """Received chunks in, runs out; anything malformed raises :class:`~vmic.errors.BadRequest`."""

    def __init__(self) -> None:
        self.received = 0  #: bytes of body taken (what crossed the network)
        self._header = bytearray()
        self._data_left = 0  #: bytes still to come of the current data record

    def feed(self, chunk: bytes) -> list[Run]:
        self.received += len(chunk)
        out: list[Run] = []
        view = memoryview(chunk)
        while view:
            if self._data_left:
                take = view[: self._data_left]
                out.append(bytes(take))
                self._data_left -= len(take)
                view = view[len(take):]
                continue
            need = HEADER.size - len(self._header)
            self._header += view[:need]
            view = view[need:]
            if len(self._header) < HEADER.size:
                break
            kind, length = HEADER.unpack(self._header)
            self._header.clear()
            if kind not in (DATA, ZEROS):
                raise BadRequest(f"{MEDIA_TYPE}: unknown record kind {kind!r} (D for data, Z for zeros)")
            if length == 0:
                raise BadRequest(f"{MEDIA_TYPE}: a record of length 0")
            if kind == ZEROS:
                out.append(Zeros(length))
            else:
                self._data_left = length
        return out
