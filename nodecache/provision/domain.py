"""The libvirt domain XML of a VM: pure, no I/O.

The disk is the VM's own copy-on-write layer: a qcow2 overlay whose backing store (the
base, format stated) is written out, or a block device (an LVM snapshot). The
contextualization ISO is a read-only CD-ROM. vmic's facts (image, expiry) ride in the
domain's ``<metadata>`` under vmic's namespace, so ``virsh dumpxml`` tells an operator
where a VM came from and when it goes.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

NAMESPACE = "https://vmic.invalid/xmlns/vm/1"


@dataclass(frozen=True)
class DomainSpec:
    name: str
    uuid: str
    memory_mib: int
    vcpus: int
    pin: tuple[int, ...]
    disk: str  #: overlay file or block device
    disk_type: str  #: "file" (qcow2 overlay) or "block" (LVM snapshot, raw)
    base: str  #: the overlay's backing file ("" for a block device)
    base_format: str
    iso: str
    image_identifier: str
    image_sha512: str
    expires: str  #: ISO 8601
    domain_type: str = "kvm"  #: "kvm", "qemu" (TCG) or "test"
    emulator: str = "/usr/bin/qemu-system-x86_64"


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attributes: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attributes)
    if text is not None:
        element.text = text
    return element


def domain_xml(spec: DomainSpec) -> str:
    domain = ET.Element("domain", type=spec.domain_type)
    _sub(domain, "name", spec.name)
    _sub(domain, "uuid", spec.uuid)
    metadata = _sub(domain, "metadata")
    ET.register_namespace("vmic", NAMESPACE)
    vm = _sub(metadata, f"{{{NAMESPACE}}}vm")
    _sub(vm, f"{{{NAMESPACE}}}image", identifier=spec.image_identifier, sha512=spec.image_sha512)
    _sub(vm, f"{{{NAMESPACE}}}expires", spec.expires)
    _sub(domain, "memory", str(spec.memory_mib), unit="MiB")
    _sub(domain, "vcpu", str(spec.vcpus), placement="static")
    if spec.pin:
        cputune = _sub(domain, "cputune")
        for vcpu in range(spec.vcpus):  # one host CPU per vCPU in order, wrapping round
            _sub(cputune, "vcpupin", vcpu=str(vcpu), cpuset=str(spec.pin[vcpu % len(spec.pin)]))
    os_ = _sub(domain, "os")
    _sub(os_, "type", "hvm", arch="x86_64", machine="pc")
    _sub(os_, "boot", dev="hd")
    features = _sub(domain, "features")
    _sub(features, "acpi")
    _sub(domain, "on_poweroff", "destroy")
    _sub(domain, "on_reboot", "restart")
    _sub(domain, "on_crash", "destroy")
    devices = _sub(domain, "devices")
    if spec.domain_type != "test":
        _sub(devices, "emulator", spec.emulator)
    if spec.disk_type == "file":
        disk = _sub(devices, "disk", type="file", device="disk")
        _sub(disk, "driver", name="qemu", type="qcow2", discard="unmap")
        _sub(disk, "source", file=spec.disk)
        backing = _sub(disk, "backingStore", type="file")
        _sub(backing, "format", type=spec.base_format)
        _sub(backing, "source", file=spec.base)
        _sub(backing, "backingStore")
    else:
        disk = _sub(devices, "disk", type="block", device="disk")
        _sub(disk, "driver", name="qemu", type="raw", cache="none", io="native")
        _sub(disk, "source", dev=spec.disk)
    _sub(disk, "target", dev="vda", bus="virtio")
    cdrom = _sub(devices, "disk", type="file", device="cdrom")
    _sub(cdrom, "driver", name="qemu", type="raw")
    _sub(cdrom, "source", file=spec.iso)
    _sub(cdrom, "target", dev="sda", bus="sata")
    _sub(cdrom, "readonly")
    _sub(devices, "serial", type="pty")
    console = _sub(devices, "console", type="pty")
    _sub(console, "target", type="serial", port="0")
    ET.indent(domain)
    return ET.tostring(domain, encoding="unicode") + "\n"
