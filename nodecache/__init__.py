"""vmic node cache: the daemon on every hypervisor.

It follows catalogues' signed image lists (:mod:`.follow`), fetches the selected images
over BitTorrent or HTTP (:mod:`.fetch`), verifies them whole against the list's sha512
and stages them as immutable base files or LVM volumes (:mod:`.stage`), keeps seeding
them, and evicts what is old (:mod:`.evict`, pure). :mod:`.daemon` ties these together;
:mod:`.api` is its local HTTP API on a Unix socket and :mod:`.cli` the ``nodecache``
command.
"""
