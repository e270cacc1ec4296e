"""libtorrent in asyncio, shared by the seeder (distributor) and node daemons (nodecache):
the session settings (:mod:`.session`) and the alert pump (:mod:`.alerts`)."""
