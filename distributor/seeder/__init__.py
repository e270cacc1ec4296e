"""The seeder: a libtorrent session seeding every current image straight from the
catalogue's blob store.

- :mod:`.session` -- the session and all its settings, in one place.
- :mod:`.alerts`  -- libtorrent alerts delivered on the asyncio event loop (alert fd).
- :mod:`.daemon`  -- follows the catalogue's verified list; adds, keeps, drops torrents.
"""
