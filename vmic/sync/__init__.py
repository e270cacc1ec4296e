"""Partner-site sync: this catalogue subscribes to other catalogues' signed lists.

- :mod:`.records` -- subscriptions, seen and mirrored images (database).
- :mod:`.image_filter` -- which partner images to mirror (pure).
- :mod:`.writer`  -- the narrow protocol sync writes to this catalogue through.
- :mod:`.mirror`  -- fetch an image's bytes over HTTP with Range resume, verified.
- :mod:`.syncer`  -- one sync: fetch, verify (as a node does), mirror, import, revoke.
- :mod:`.web`     -- the subscription API and the partners' verbatim lists (sub-apps).

Every fetched list is checked by :func:`vmic.imagelist.verify.verify_signed_list`,
the same code a node uses. A list that fails leaves the last good one in force.
"""
