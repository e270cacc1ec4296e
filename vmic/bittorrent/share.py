"""Origin shares: each downloading node takes its own slice of a new image from the origin.

Why: when N nodes fetch a new image at once, each node's libtorrent asks the origin (the
seeder, and the catalogue's web seed) for whichever pieces are rarest, and N nodes see the
same rarity, so the origin sends many pieces several times. The origin should send each
piece about once and let the nodes trade the rest (the catalogue "sending little more
than one copy").

How: the tracker knows the swarm's nodes. A node asks it for its *share*: its index
among the named nodes of the swarm, downloading or done (sorted by name), and their count
(``GET /swarm/<btih>/share?node=<name>``, :func:`share_of`). Done nodes keep their places:
counting only the nodes still downloading made the count shrink as nodes finished, so the
last ones got ever larger slices and pulled from the origin what the finished nodes could
give them (measured: one node's slice grew to a third of the image). The node gives the pieces of
its slice (:func:`slice_of`) the top priority and every other piece a low one. Once its
slice is complete it drops the web seed: from then on, it gets the rest from peers (the
seeder still answers, super-seeding). If it then makes no progress for
:data:`STALL_SECONDS` (peers gone, a slice nobody took), it takes the web seed back for
good: the web seed stays the fallback that lets a node finish alone. (The priorities do
not bound what the web seed sends: libtorrent asks a web seed for at least 1 MiB of
contiguous pieces, past the slice's edge, and once every piece of the slice is requested
from someone, for the rarest other pieces; until a node has 4 pieces it picks at random.
What spares the origin is dropping the web seed once the node holds its slice, while the
other nodes still fetch theirs; more nodes than pieces leaves a slice empty.)

Everything here is pure; the node (:mod:`vmic.fetch.shares`) does the I/O.
Measured with tools/bench/swarm.py: see README.rst.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

#: priority of the pieces of the node's own slice, and of all the others (libtorrent: 0-7)
OWN_PRIORITY = 7
OTHER_PRIORITY = 1
#: seconds without a new piece, after the web seed was dropped, before it is taken back
STALL_SECONDS = 4.0


@dataclass(frozen=True)
class Share:
    index: int
    count: int

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ValueError(f"share {self.index} of {self.count}")


def share_of(node: str, swarm: Iterable[str]) -> Share:
    """The tracker's answer: ``node``'s place among the named nodes of the swarm (the node
    itself counted even before its first announce)."""
    return place(node, sorted(set(swarm)))


def place(node: str, names: Sequence[str]) -> Share:
    """:func:`share_of` for ``names`` already sorted and unique (the tracker keeps them so
    for a second: thousands of nodes ask at once)."""
    index = bisect.bisect_left(names, node)
    present = index < len(names) and names[index] == node
    return Share(index, len(names) + (0 if present else 1))


def slice_of(share: Share, num_pieces: int) -> range:
    """The contiguous pieces of one share (contiguous: long web-seed ranges, sequential disk)."""
    return range(share.index * num_pieces // share.count, (share.index + 1) * num_pieces // share.count)


def own_pieces(share: Share, wanted: Sequence[int]) -> Sequence[int]:
    """The pieces of one share: its contiguous part of ``wanted``, the pieces to fetch in
    order. Pieces every node has from the start (zeros, :mod:`vmic.fetch.zero_pieces`)
    are in nobody's share: shares over all pieces left a node whose slice fell in the
    image's holes with nothing to take from the origin, and another with all its data."""
    part = slice_of(share, len(wanted))
    return wanted[part.start:part.stop]


def priorities(share: Share, num_pieces: int, wanted: Sequence[int] | None = None) -> list[int]:
    own = set(own_pieces(share, range(num_pieces) if wanted is None else wanted))
    return [OWN_PRIORITY if piece in own else OTHER_PRIORITY for piece in range(num_pieces)]


def slice_done(share: Share, have: list[bool], wanted: Sequence[int] | None = None) -> bool:
    return all(have[piece] for piece in own_pieces(share, range(len(have)) if wanted is None else wanted))


@dataclass
class WebSeedPolicy:
    """When a node uses the web seed: until its slice is done, then only while stalled.

    ``step`` takes what the node has now and the seconds since the last step; it answers
    whether the web seed should be on."""

    share: Share | None = None
    #: the pieces shares divide (None: all)
    wanted: Sequence[int] | None = None
    web_seed: bool = True
    stalled_for: float = 0.0
    #: peers did not suffice once: the web seed stays on, shares are no longer asked for
    fell_back: bool = False
    _had: int = -1

    def step(self, have: list[bool], seconds: float) -> bool:
        count = sum(have)
        if count == len(have):
            return self.web_seed
        progressed = count > self._had
        self._had = count
        self.stalled_for = 0.0 if progressed else self.stalled_for + seconds
        if self.share is None or self.fell_back:
            self.web_seed = True  # no share (yet): plain BitTorrent, web seed on
        elif self.web_seed and slice_done(self.share, have, self.wanted):
            self.web_seed = False
        elif not self.web_seed and self.stalled_for >= STALL_SECONDS:
            self.web_seed = self.fell_back = True
        return self.web_seed
