"""The distributor's HTTP tracker.

- :mod:`.announce` -- reading announce and scrape requests (pure).
- :mod:`.topology` -- subnets to sites and racks (pure).
- :mod:`.swarm`    -- peers per torrent, expiry, topology-aware peer selection (pure).
- :mod:`.server`   -- the aiohttp service, private to the torrents its catalogue lists.
"""
