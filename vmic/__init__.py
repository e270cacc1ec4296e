"""vmic: the catalogue of virtual-machine images, and the code all three parts share.

Shared by :mod:`distributor` and :mod:`nodecache`:

- :mod:`vmic.imagelist` -- the HEPiX image-list model, signing, verification and policy.
- :mod:`vmic.config` -- TOML + environment configuration.
- :mod:`vmic.errors` -- the error hierarchy.
- :mod:`vmic.log` -- structured logging.
- :mod:`vmic.pki` -- a test CA and endorser certificates for demos and tests.
- :mod:`vmic.client` -- the aiohttp client of the catalogue API.
- :mod:`vmic.torrents` -- an image's torrent (libtorrent): piece size, web seed.
- :mod:`vmic.events`, :mod:`vmic.follow` -- following a catalogue's verified list.

The catalogue service itself lives in :mod:`vmic.catalogue`, partner-site sync in
:mod:`vmic.sync`, the ``vmic`` command in :mod:`vmic.cli`.
"""

__version__ = "0.1.0"
