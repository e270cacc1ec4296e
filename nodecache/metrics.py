"""The node daemon's Prometheus metrics (one registry per daemon: no global state); the
build, process, HTTP and followed-list metrics every daemon has: :mod:`vmic.service_metrics`."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from vmic.service_metrics import Accumulated, HttpMetrics, service_registry


class Metrics:
    def __init__(self) -> None:
        self.registry = r = service_registry("nodecache")
        self.http = HttpMetrics(r, "vmic_node")
        self.bytes_down = Counter("vmic_node_bittorrent_downloaded_bytes", "Payload bytes downloaded over "
                                  "BitTorrent (peers and web seeds)", registry=r)
        self.bytes_up = Counter("vmic_node_bittorrent_uploaded_bytes", "Payload bytes seeded to peers", registry=r)
        self.http_bytes = Counter("vmic_node_http_downloaded_bytes", "Image bytes fetched over plain HTTP",
                                  registry=r)
        self.images = Gauge("vmic_node_images", "Images the cache holds, by state", ["state"], registry=r)
        self.staged = Counter("vmic_node_stages", "Finished stage attempts by result", ["result"], registry=r)
        self.stage_seconds = Histogram("vmic_node_stage_seconds", "From the decision to fetch to a staged base",
                                       buckets=(1, 5, 15, 60, 300, 900, 3600, 4 * 3600), registry=r)
        self.fetch_seconds = Histogram("vmic_node_fetch_seconds", "From the start of a download to its last "
                                       "byte (every piece checked; the sha512 is checked while staging)",
                                       buckets=(1, 5, 15, 60, 300, 900, 3600, 4 * 3600), registry=r)
        self.verification_failures = Counter("vmic_node_verification_failures", "Lists or images refused, "
                                             "by kind and reason", ["kind", "reason"], registry=r)
        self.piece_failures = Counter("vmic_node_piece_hash_failures", "Pieces that failed their hash "
                                      "(corrupt peers)", registry=r)
        self.cache_bytes = Gauge("vmic_node_cache_bytes", "Bytes the cache's own images take", registry=r)
        self.cache_capacity = Gauge("vmic_node_cache_capacity_bytes", "The cache's budget", registry=r)
        self.evictions = Counter("vmic_node_evictions", "Images evicted, by reason", ["reason"], registry=r)
        self.references = Gauge("vmic_node_references", "Bases in use by VMs (references)", registry=r)
        self.down_seen, self.up_seen, self.failures_seen = Accumulated(), Accumulated(), Accumulated()
