"""Every extension key this project reads or writes in an image list, in one place.

HEPiX lists carry ``hv:`` and ``dc:`` keys; ours are ``vmic:`` keys, which other HEPiX
clients ignore. A key is written as one of these names, never as a string literal, so
that renaming one is one change (a test walks the code for stray literals).
"""

from __future__ import annotations

PREFIX = "vmic:"

# --- per image ------------------------------------------------------------------------------
COMPRESSION = "vmic:compression"  #: "none", "gzip", "xz" or "zstd": how hv:uri's bytes are packed
PUBLISHER = "vmic:publisher"  #: who published the image at its catalogue
NAMESPACE = "vmic:namespace"  #: the catalogue namespace (a publisher or a partner subscription)
NAME = "vmic:name"  #: the image's name in its namespace (versions share it)
TAGS = "vmic:tags"  #: free tags for node selection
PREHEAT = "vmic:preheat"  #: which nodes stage the image now (see :mod:`vmic.preheat`)
TORRENT = "vmic:torrent"  #: URL of the image's .torrent
BTIH = "vmic:btih"  #: its BitTorrent v1 info-hash (hex)
BTMH = "vmic:btmh"  #: its BitTorrent v2 info-hash (multihash hex), where made
CREATED = "dc:date:created"
EXPIRES = "dc:date:expires"

# --- per list -------------------------------------------------------------------------------
TORRENTS = "vmic:torrents"  #: true: the catalogue makes a torrent of every image
