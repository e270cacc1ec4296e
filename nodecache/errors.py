"""The node cache's errors: each a :class:`vmic.errors.VmicError`, so the local API maps
it to an HTTP status and a JSON body, and the CLI to a one-line message."""

from __future__ import annotations

from vmic.errors import FetchFailed as FetchFailed  # shared with partner mirroring (vmic.fetch)
from vmic.errors import VmicError


class NodeCacheError(VmicError):
    """Base class of every error the node cache raises on purpose."""

    code = "nodecache_error"


class UnknownImage(NodeCacheError):
    """No followed list names this image (identifier or title)."""

    status = 404
    code = "unknown_image"


class ImageRefused(NodeCacheError):
    """The bytes cannot be staged: they do not match the signed sha512, their disk header
    is unsafe (a qcow2 backing or data file), or their format is not the declared one."""

    status = 422
    code = "image_refused"


class StageFailed(NodeCacheError):
    """Writing the staged base failed (disk or volume group full, qemu-img, lvm)."""

    status = 507
    code = "stage_failed"


class InUse(NodeCacheError):
    """The image is referenced by a VM's overlay or snapshot and cannot be evicted."""

    status = 409
    code = "in_use"


class BackendUnavailable(NodeCacheError):
    """The backend cannot run on this host (e.g. LVM data path without device-mapper)."""

    status = 503
    code = "backend_unavailable"
