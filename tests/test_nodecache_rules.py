"""The node cache's pure rules, table-driven: disk-header safety, image selection,
eviction, configuration. No sockets, no disks."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from nodecache import evict
from nodecache.config import Selection, load
from nodecache.disk_header import EXT_DATA_FILE, INCOMPAT_DATA_FILE, check, parse_qcow2, probe
from nodecache.errors import ImageRefused
from nodecache.selection import resolve, select
from vmic.errors import ConfigError
from vmic.imagelist.model import Image
from vmic.units import parse_size


def qcow2_header(version: int = 3, backing: int = 0, incompatible: int = 0, crypt: int = 0,
                 extensions: list[tuple[int, bytes]] | None = None) -> bytes:
    header = b"QFI\xfb" + struct.pack(">IQIIQI", version, backing, 0, 16, 2**30, crypt)
    header = header.ljust(72, b"\0")
    if version == 3:
        header += struct.pack(">QQQII", incompatible, 0, 0, 4, 104)
    for kind, data in extensions or []:
        header += struct.pack(">II", kind, len(data)) + data.ljust((len(data) + 7) // 8 * 8, b"\0")
    header += struct.pack(">II", 0, 0)
    return header.ljust(65536, b"\0")


@pytest.mark.parametrize("declared, head, reason", [
    ("raw", b"\0" * 65536, None),
    ("qcow2", qcow2_header(), None),
    ("qcow2", qcow2_header(version=2), None),
    ("qcow2", qcow2_header(backing=0x1000), "backing file"),
    ("qcow2", qcow2_header(version=2, backing=0x1000), "backing file"),
    ("qcow2", qcow2_header(incompatible=INCOMPAT_DATA_FILE), "external data file"),
    ("qcow2", qcow2_header(extensions=[(EXT_DATA_FILE, b"/etc/shadow")]), "external data file"),
    ("qcow2", qcow2_header(crypt=1), "encrypted"),
    ("qcow2", qcow2_header(version=4), "version 4"),
    ("raw", qcow2_header(backing=0x1000), "declared raw but the bytes are a qcow2 image"),
    ("qcow2", b"\0" * 65536, "declared qcow2 but the bytes are a raw image"),
    ("raw", b"KDMV" + b"\0" * 1000, "vmdk"),
    ("raw", b"COWD" + b"\0" * 1000, "vmdk"),
    # a VMDK text descriptor declared raw: qemu would open the host files its extents name
    ("raw", b"# Disk DescriptorFile\nversion=1\nCID=fffffffe\ncreateType=\"monolithicFlat\"\n"
            b"RW 2048 FLAT \"/etc/shadow\" 0\n", "declared raw but the bytes are a vmdk image"),
    ("raw", b"#c\n   \r\nversion=3\r\nRW 1 FLAT \"/x\" 0\n", "vmdk"),
    ("raw", b"#c\nxversion=1\n", None),
    ("raw", b"version=4\n", None),
    ("raw", b"\0" * 0x40 + b"\x7f\x10\xda\xbe" + b"\0" * 100, "vdi"),
])
def test_disk_header_rules(declared: str, head: bytes, reason: str | None) -> None:
    if reason is None:
        check(declared, head)
    else:
        with pytest.raises(ImageRefused, match=reason):
            check(declared, head)


def test_qcow2_header_parse() -> None:
    header = parse_qcow2(qcow2_header())
    assert (header.version, header.virtual_size, header.backing_file, header.data_file) == (3, 2**30, False, False)
    assert probe(qcow2_header()) == "qcow2" and probe(b"hello") == "raw"


def image(identifier: str, version: str, name: str = "golden", os: str = "Debian", **extra: str) -> Image:
    return Image(identifier=identifier, uri=f"http://x/{identifier}", size=1, sha512=identifier[0] * 128,
                 version=version, title=f"alice/{name}", os=os,
                 extra={"vmic:namespace": "alice", "vmic:name": name, **extra})


IMAGES = [image("a1", "1"), image("a2", "2"), image("a3", "10"), image("b1", "1", "batch", os="CentOS"),
          image("c1", "2024.1", "tools", **{"vmic:publisher": "bob"})]


@pytest.mark.parametrize("selection, chosen", [
    (Selection(), {"a1", "a2", "a3", "b1", "c1"}),
    (Selection(none=True), set()),
    (Selection(latest=1), {"a3", "b1", "c1"}),  # "10" is newer than "2"
    (Selection(latest=2), {"a3", "a2", "b1", "c1"}),
    (Selection(os=("centos",)), {"b1"}),
    (Selection(publishers=("bob",)), {"c1"}),
    (Selection(names=("alice/golden",), latest=1), {"a3"}),
    (Selection(tags=("batch",)), {"b1"}),
    (Selection(arch=("aarch64",)), set()),
])
def test_selection(selection: Selection, chosen: set[str]) -> None:
    assert {i.identifier for i in select(IMAGES, selection)} == chosen


def test_resolve_by_identifier_or_newest_of_a_name() -> None:
    assert resolve(IMAGES, "a2").identifier == "a2"  # type: ignore[union-attr]
    assert resolve(IMAGES, "alice/golden").identifier == "a3"  # type: ignore[union-attr]
    assert resolve(IMAGES, "nothing") is None


def entry(sha: str, size: int, used: float, **kw: object) -> evict.CacheEntry:
    return evict.CacheEntry(sha, f"id-{sha}", size, used, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("entries, capacity, expected, over", [
    # under the high watermark: nothing goes
    ([entry("a", 40, 1), entry("b", 40, 2)], 100, [], False),
    # above 90 %: least recently used first, down to 70 %
    ([entry("a", 40, 3), entry("b", 30, 1), entry("c", 25, 2)], 100, [("b", "space")], False),
    ([entry("a", 45, 3), entry("b", 20, 1), entry("c", 30, 2)], 100, [("b", "space"), ("c", "space")], False),
    # revoked and expired go at once, whatever the fill
    ([entry("a", 1, 1, listed=False), entry("b", 1, 2, expired=True), entry("c", 1, 3)], 100,
     [("a", "revoked"), ("b", "expired")], False),
    # a base in use is never evicted: not when revoked, not for space
    ([entry("a", 50, 1, listed=False, references=1), entry("b", 45, 2, references=2)], 100, [], True),
    ([entry("a", 60, 1, references=1), entry("b", 35, 2)], 100, [("b", "space")], False),
    # capacity 0: no space rule
    ([entry("a", 10**12, 1)], 0, [], False),
])
def test_eviction_plan(entries: list[evict.CacheEntry], capacity: int, expected: list[tuple[str, str]],
                       over: bool) -> None:
    result = evict.plan(entries, capacity, 0.9, 0.7)
    assert [(e.sha512, e.reason) for e in result.evictions] == expected
    assert result.over_watermark is over


def test_config(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text('[nodecache]\ncache_dir = "/var/cache/x"\nupload_limit = "50M"\ncapacity = "1.5G"\n'
                    '[[nodecache.catalogue]]\nurl = "http://c"\nca = "/ca"\nendorser_dn = "/CN=e"\n'
                    '[nodecache.select]\nos = "Debian"\nlatest = 2\n')
    config = load(path, env={"VMIC_NODECACHE_BACKEND": "file"})
    assert config.upload_limit == 50 * 2**20 and config.capacity == int(1.5 * 2**30)
    assert config.catalogues[0].url == "http://c" and config.select == Selection(os=("Debian",), latest=2)
    assert config.catalogues[0].max_list_bytes == 16 * 2**20  # the default cap
    assert config.socket_path == Path("/var/cache/x/nodecache.sock")
    assert parse_size("64M") == 64 * 2**20 and parse_size(12) == 12


@pytest.mark.parametrize("text, message", [
    ('cache_dir = "/x"\nbackend = "zfs"', "backend must be one of"),
    ('cache_dir = "/x"\nbackend = "lvm"', "needs volume_group"),
    ('cache_dir = "/x"\nlow_watermark = 0.95', "watermarks"),
    ('cache_dir = "/x"\ncapacity = "lots"', "is not a size"),
    ('cache_dir = "/x"\ncolour = "blue"', "unknown setting"),
    ('cache_dir = "/x"\n[[nodecache.catalogue]]\nurl = "http://c"', "ca is not set"),
    ('cache_dir = "/x"\n[[nodecache.catalogue]]\nurl = "http://c"\nca = "/ca"\nendorser_dn = "CN"',
     "endorser_dn: cannot read the DN"),
    ('cache_dir = "/x"\n[[nodecache.catalogue]]\nurl = "http://c"\nca = "/ca"\nendorser_dn = "/CN=e"\n'
     'max_list_bytes = "2G"', "max_list_bytes must be between"),
    ('backend = "file"', "cache_dir is not set"),
])
def test_config_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "node.toml"
    path.write_text("[nodecache]\n" + text + "\n")
    with pytest.raises(ConfigError, match=message):
        load(path, env={})
