"""Distributor: the tracker and the seeder of every catalogued image (the catalogue
makes the torrents, :mod:`vmic.torrents`).

- :mod:`.tracker` -- HTTP tracker, private to the catalogue's verified list, rack-aware.
- :mod:`.seeder`  -- libtorrent seeder serving the catalogue's blob store in place.
- :mod:`.cli`     -- ``distributor tracker|seeder -c config.toml``.

Imports the shared image-list model, verification, config and logging from :mod:`vmic`.
"""
