"""The catalogue's Prometheus metrics (one registry per catalogue: no global state); the
build, process, and HTTP request metrics every daemon has: :mod:`vmic.service_metrics`."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from ..service_metrics import HttpMetrics, service_registry


class Metrics:
    """Everything ``GET /metrics`` shows."""

    def __init__(self) -> None:
        self.registry = r = service_registry("catalogue")
        self.http = HttpMetrics(r, "vmic_catalogue")
        self.uploads = Counter("vmic_catalogue_uploads", "Finished uploads by result", ["result"], registry=r)
        self.upload_bytes = Counter("vmic_catalogue_upload_bytes", "Image bytes received (zeros sent as extents too)",
                                    registry=r)
        self.upload_body_bytes = Counter("vmic_catalogue_upload_body_bytes",
                                         "Bytes of upload bodies received (what crossed the network)", registry=r)
        self.list_version = Gauge("vmic_catalogue_imagelist_version", "hv:version of the signed list", registry=r)
        self.list_expiry = Gauge("vmic_catalogue_imagelist_expiry_timestamp_seconds",
                                 "When the signed list served now expires (it is signed again at half its lifetime)",
                                 registry=r)
        self.endorser_expiry = Gauge("vmic_catalogue_endorser_certificate_expiry_timestamp_seconds",
                                     "When the endorser certificate that signs the list expires", registry=r)
        self.images = Gauge("vmic_catalogue_images", "Images in the current list", registry=r)
        self.blob_bytes = Gauge("vmic_catalogue_blob_store_bytes", "Bytes of the images in the blob store", registry=r)
        self.blob_disk_bytes = Gauge("vmic_catalogue_blob_store_disk_bytes",
                                     "Disk the blob store takes (holes take none)", registry=r)
        self.syncs = Counter("vmic_catalogue_partner_syncs", "Partner syncs by subscription and result "
                             "(ok, image_errors, unreachable, or the reason a list was refused)",
                             ["subscription", "result"], registry=r)
