"""Is a disk image safe to hand to qemu? Pure: reads a header, no I/O.

A qcow2 image can name a *backing file* or an *external data file*: any path on the
host, which qemu would then open on the VM's behalf (a published image could read the
hypervisor's disks). Like OpenStack Nova, the node refuses such images, and images
whose bytes are another format than the list declares (a "raw" image that is really a
qcow2 with a backing file would be dangerous anywhere a format is probed).

``check(declared_format, head)`` takes the first :data:`HEAD_BYTES` of the image (after
decompression) and raises :class:`~nodecache.errors.ImageRefused` with the reason.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .errors import ImageRefused

HEAD_BYTES = 64 * 2**10
QCOW2_MAGIC = b"QFI\xfb"
#: other formats qemu would recognise, by (offset, magic)
OTHER_MAGICS = {
    "vmdk": (0, b"KDMV"),
    "qed": (0, b"QED\x00"),
    "vhdx": (0, b"vhdxfile"),
    "luks": (0, b"LUKS\xba\xbe"),
    "vdi": (0x40, b"\x7f\x10\xda\xbe"),
    "vmdk3": (0, b"COWD"),
}
_VMDK_VERSIONS = tuple(f"version={v}{end}".encode() for v in (1, 2, 3) for end in ("\n", "\r\n"))
EXT_DATA_FILE = 0x44415441
INCOMPAT_DATA_FILE = 1 << 2


@dataclass(frozen=True)
class Qcow2Header:
    version: int
    virtual_size: int
    backing_file: bool
    data_file: bool
    encrypted: bool


def probe(head: bytes) -> str:
    """The format the bytes are: "qcow2", another known format, or "raw"."""
    if head[:4] == QCOW2_MAGIC:
        return "qcow2"
    for name, (offset, magic) in OTHER_MAGICS.items():
        if head[offset:offset + len(magic)] == magic:
            return "vmdk" if name == "vmdk3" else name
    if is_vmdk_descriptor(head):
        return "vmdk"
    return "raw"


def is_vmdk_descriptor(head: bytes) -> bool:
    """Whether qemu would take these bytes for a VMDK *text descriptor* (whose extent lines
    name files on the host), as qemu's own probe decides: comment lines and blank lines,
    then ``version=1``, ``2`` or ``3`` on a line of its own."""
    at = 0
    while at < len(head):
        if head[at:at + 1] == b"#":  # a comment line
            newline = head.find(b"\n", at)
            if newline < 0:
                return False
            at = newline + 1
            continue
        if head[at:at + 1] == b" ":  # a blank line: spaces only
            while head[at:at + 1] == b" ":
                at += 1
            if head[at:at + 1] == b"\r":
                at += 1
            if head[at:at + 1] != b"\n":
                return False
            at += 1
            continue
        return head.startswith(_VMDK_VERSIONS, at)
    return False


def parse_qcow2(head: bytes) -> Qcow2Header:
    if len(head) < 72 or head[:4] != QCOW2_MAGIC:
        raise ImageRefused("not a qcow2 image (no qcow2 header)")
    version, backing_offset, _, _, size, crypt = struct.unpack(">IQIIQI", head[4:36])
    if version not in (2, 3):
        raise ImageRefused(f"qcow2 version {version} is not supported")
    incompatible, header_length = 0, 72
    if version == 3:
        if len(head) < 104:
            raise ImageRefused("qcow2 header is truncated")
        incompatible = struct.unpack(">Q", head[72:80])[0]
        header_length = struct.unpack(">I", head[100:104])[0]
    data_file = bool(incompatible & INCOMPAT_DATA_FILE)
    offset = header_length
    while offset + 8 <= len(head):  # header extensions, up to the end marker (type 0)
        kind, length = struct.unpack(">II", head[offset:offset + 8])
        if kind == 0:
            break
        data_file |= kind == EXT_DATA_FILE
        offset += 8 + (length + 7) // 8 * 8
    return Qcow2Header(version, size, backing_offset != 0, data_file, crypt != 0)


def check(declared_format: str, head: bytes) -> None:
    """Raise ImageRefused unless ``head`` is a safe image of ``declared_format``."""
    actual = probe(head)
    if actual != declared_format:
        raise ImageRefused(f"declared {declared_format} but the bytes are a {actual} image")
    if actual == "qcow2":
        header = parse_qcow2(head)
        if header.backing_file:
            raise ImageRefused("qcow2 image names a backing file (it could read the host's files)")
        if header.data_file:
            raise ImageRefused("qcow2 image names an external data file (it could read the host's files)")
        if header.encrypted:
            raise ImageRefused("qcow2 image is encrypted")
