"""How the seeder serves one image to the nodes downloading it, decided afresh every second.

Pure: the daemon (:mod:`distributor.seeder.daemon`) reads each torrent's peers and applies
the answer.

- **Super-seeding** while a crowd downloads (at least ``super_seed_leechers`` peers): each
  piece goes to one node, and the next only once it has spread, so that the nodes' uploads
  carry the load. With fewer it seeds normally: a lone downloader without the web seed would
  otherwise get one piece at a time.
- **Yielding to the web seed** while a crowd downloads an image whose torrent names a web
  seed and the catalogue answers: the seeder uploads that image at most ``web_seed_yield``
  bytes/s. The seeder serves the catalogue's blob store in place, so it always shares the
  catalogue's link; node daemons already take each piece from the web seed once (their
  origin shares, :mod:`vmic.bittorrent.share`), and whatever the seeder sends a crowd on top
  is a second copy from the origin. Measured (tools/bench/swarm.py --from-publish, 2 GiB,
  N = 16, half rates): origin copies 1.39-1.50 with the seeder unlimited (its part 0.33),
  1.37 held to 10 Mbit/s, 1.23 held to 1 Mbit/s; yielding, 1.07 and 1.09 in two runs; the
  time to staged within 1.10-1.14 x the bound in all of them. When the catalogue does not
  answer, or no web seed is named, or only one or two peers download, the seeder serves at
  full speed: then it is the origin.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CrowdRules:
    super_seed: bool = True
    super_seed_leechers: int = 3
    #: bytes/s per image while it yields to the web seed; 0: never yield
    web_seed_yield: int = 128 * 1024


@dataclass(frozen=True)
class Serving:
    super_seeding: bool
    #: bytes/s for this image alone; 0: none but the session's ``upload_limit``
    upload_limit: int
    #: a crowd was downloading when this was decided
    crowd: bool = False

    @property
    def yielding(self) -> bool:
        return self.upload_limit > 0


def serving(leechers: int, has_web_seed: bool, catalogue_answers: bool, rules: CrowdRules,
            now: Serving | None = None, settled: bool = True) -> Serving:
    """How to serve an image that ``leechers`` peers download now. Switching super-seeding
    drops the image's peers (:meth:`Seeder._serve`, why there): until they are back
    (``settled`` false) the crowd is taken to be as it was (``now``), or the peers' absence
    would switch it straight back."""
    crowd = leechers >= rules.super_seed_leechers if settled or now is None else now.crowd
    yields = crowd and has_web_seed and catalogue_answers and rules.web_seed_yield > 0
    return Serving(super_seeding=rules.super_seed and crowd, upload_limit=rules.web_seed_yield if yields else 0,
                   crowd=crowd)
