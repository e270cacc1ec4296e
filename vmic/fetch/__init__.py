"""Getting an image's published bytes, the one way a node daemon and partner mirroring
both do it (:class:`.fetcher.Fetcher`): over BitTorrent (:mod:`.swarm`, with origin shares
:mod:`.shares`) when the signed list names a torrent, else over HTTP from ``hv:uri``
(:mod:`.over_http`). Both resume after a restart and take at most ``hv:size`` bytes;
neither trusts the bytes (the caller checks the sha512 of the signed list)."""
