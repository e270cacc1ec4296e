"""The catalogue service: publishers upload images, subscribers read a signed list.

- :mod:`.config`   -- the ``[catalogue]`` settings and publishers.
- :mod:`.names`    -- what a namespace, image name, version and identifier may be.
- :mod:`.db`       -- one SQL interface over SQLite (default) and PostgreSQL.
- :mod:`.store`    -- image and upload records (metadata), on :mod:`.db`.
- :mod:`.blobs`    -- the content-addressed blob store and streaming, hashing writes.
- :mod:`.uploads`  -- resumable uploads (tus 1.0 core: HEAD / PATCH with Upload-Offset).
- :mod:`.listing`  -- builds, signs and caches the HEPiX image list.
- :mod:`.service`  -- all of the above wired into one Catalogue; crash recovery; torrents.
- :mod:`.request_context` -- what every handler needs: the catalogue, and who is asking.
- :mod:`.tls`      -- HTTPS, and publishers authenticated by client certificate.
- :mod:`.metrics`  -- Prometheus metrics.
- :mod:`.web`      -- the aiohttp application: routes, JSON errors, the event stream.
- :mod:`.page`     -- the read-only HTML page for people.
- :mod:`.server`   -- run it until SIGINT/SIGTERM.
"""
