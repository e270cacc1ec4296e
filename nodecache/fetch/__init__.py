"""Getting an image's published bytes onto this node: over BitTorrent (:mod:`.swarm`)
when the list names a torrent, else over HTTP from ``hv:uri`` (:mod:`.over_http`). Both
resume after a restart and take at most ``hv:size`` bytes; neither trusts the bytes
(staging checks the sha512 of the signed list)."""
