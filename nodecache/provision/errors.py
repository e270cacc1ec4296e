"""The provisioning shim's errors (each a node-cache error: an HTTP status, a JSON body,
and one line with a non-zero exit in ``vmprov``)."""

from __future__ import annotations

from ..errors import NodeCacheError


class ProvisionError(NodeCacheError):
    code = "provision_failed"


class NameTaken(ProvisionError):
    status = 409
    code = "name_taken"


class UnknownVm(ProvisionError):
    status = 404
    code = "unknown_vm"


class NotAllowed(ProvisionError):
    """The image is not allowed to run on this node (the ``[nodecache.provision] allow`` policy)."""

    status = 403
    code = "image_not_allowed"


class BaseVanished(ProvisionError):
    """The base disappeared between staging and use (evicted, deleted): nothing was made."""

    status = 409
    code = "base_vanished"


class DiskFailed(ProvisionError):
    """The copy-on-write disk could not be made (disk full, volume group full, no device-mapper)."""

    status = 507
    code = "disk_failed"


class HypervisorRefused(ProvisionError):
    """libvirt or qemu refused to define or start the domain."""

    status = 502
    code = "hypervisor_refused"
