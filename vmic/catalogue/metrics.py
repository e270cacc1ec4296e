"""The catalogue's Prometheus metrics (one registry per catalogue: no global state)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge


class Metrics:
    """Everything ``GET /metrics`` shows."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("vmic_catalogue_http_requests", "HTTP requests", ["route", "status"],
                                registry=self.registry)
        self.uploads = Counter("vmic_catalogue_uploads", "Finished uploads by result", ["result"],
                               registry=self.registry)
        self.upload_bytes = Counter("vmic_catalogue_upload_bytes", "Image bytes received", registry=self.registry)
        self.list_version = Gauge("vmic_catalogue_imagelist_version", "hv:version of the signed list",
                                  registry=self.registry)
        self.images = Gauge("vmic_catalogue_images", "Images in the current list", registry=self.registry)
        self.blob_bytes = Gauge("vmic_catalogue_blob_store_bytes", "Bytes in the blob store",
                                registry=self.registry)
        self.syncs = Counter("vmic_catalogue_partner_syncs", "Partner syncs by subscription and result "
                             "(ok, image_errors, unreachable, or the reason a list was refused)",
                             ["subscription", "result"], registry=self.registry)
        self._request_counters: dict[tuple[str, int], Any] = {}

    def count_request(self, route: str, status: int) -> None:
        """Count one request (labelled children are cached: this runs on every request)."""
        counter = self._request_counters.get((route, status))
        if counter is None:
            counter = self._request_counters[(route, status)] = self.requests.labels(route, str(status))
        counter.inc()
