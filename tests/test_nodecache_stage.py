"""Staging into the file backend, for real: qemu-img, xattrs, a small file system that
fills up. Every way the bytes can be wrong ends with no base and no leftover."""

from __future__ import annotations

import gzip
import hashlib
import lzma
import os
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard
from support import small_tmpfs, write_image

from nodecache import qemu
from nodecache.errors import ImageRefused, StageFailed
from nodecache.storage.base import metadata_for
from nodecache.storage.files import FileStorage, read_metadata
from vmic.imagelist.model import EXT_COMPRESSION, Image

COMPRESS = {"gzip": gzip.compress, "xz": lambda d: lzma.compress(d, preset=0), "zstd": zstandard.compress}


def published(path: Path, fmt: str = "raw", compression: str = "none", sha512: str | None = None) -> Image:
    data = path.read_bytes()
    return Image(identifier="11111111-2222-3333-4444-555555555555", uri="http://x", size=len(data),
                 sha512=sha512 or hashlib.sha512(data).hexdigest(), version="7", title="alice/golden", format=fmt,
                 extra={EXT_COMPRESSION: compression})


async def stage(backend: FileStorage, source: Path, image: Image) -> Path:
    seen: list[int] = []
    staged = await backend.stage(source, image, metadata_for(image, backend.target_format(image), "http://c", 3),
                                 seen.append)
    assert seen, "progress was reported"
    return Path(staged.location)


def leftovers(base: Path) -> list[str]:
    return sorted(p.name for p in base.iterdir())


@pytest.fixture
def raw_image(tmp_path: Path) -> Path:
    path = write_image(tmp_path / "golden.raw", 3 * 2**20 + 4096)
    with open(path, "r+b") as handle:  # a stretch of zeros: staged sparse
        handle.seek(2**20)
        handle.write(bytes(2**20))
    return path


async def test_raw_to_raw_is_a_verified_link_with_metadata(tmp_path: Path, raw_image: Path) -> None:
    backend = FileStorage(tmp_path / "base", "raw", tmp_path / "vms")
    image = published(raw_image)
    base = await stage(backend, raw_image, image)
    assert base == tmp_path / "base" / f"{image.sha512}.raw"
    assert base.read_bytes() == raw_image.read_bytes()
    assert os.path.samefile(base, raw_image), "no copy: the base is the downloaded file"
    assert stat.S_IMODE(base.stat().st_mode) == 0o444
    meta = read_metadata(base)
    assert (meta["identifier"], meta["version"], meta["sha512"], meta["format"], meta["list_version"]) == \
        (image.identifier, "7", image.sha512, "raw", "3")
    assert [s.sha512 for s in await backend.staged()] == [image.sha512]


@pytest.mark.parametrize("compression", ["gzip", "xz", "zstd"])
async def test_compressed_images_are_decompressed_while_verified(tmp_path: Path, raw_image: Path,
                                                                 compression: str) -> None:
    packed = tmp_path / f"golden.raw.{compression}"
    packed.write_bytes(COMPRESS[compression](raw_image.read_bytes()))
    backend = FileStorage(tmp_path / "base", "raw", tmp_path / "vms")
    base = await stage(backend, packed, published(packed, compression=compression))
    assert base.read_bytes() == raw_image.read_bytes()
    assert base.stat().st_blocks * 512 < raw_image.stat().st_size, "zero blocks are not written"
    assert leftovers(tmp_path / "base") == [base.name]


async def test_converted_to_the_nodes_format_with_qemu_img(tmp_path: Path, raw_image: Path) -> None:
    backend = FileStorage(tmp_path / "base", "qcow2", tmp_path / "vms")
    image = published(raw_image)
    base = await stage(backend, raw_image, image)
    assert base.name == f"{image.sha512}.qcow2"
    facts = await qemu.info(base, "qcow2")
    assert facts.format == "qcow2" and facts.virtual_size == raw_image.stat().st_size and facts.backing_file is None
    back = tmp_path / "back.raw"
    subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(base), str(back)], check=True)
    assert back.read_bytes() == raw_image.read_bytes()
    assert read_metadata(base)["format"] == "qcow2"
    assert leftovers(tmp_path / "base") == [base.name]


async def test_published_qcow2_staged_as_raw(tmp_path: Path, raw_image: Path) -> None:
    qcow2 = tmp_path / "golden.qcow2"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw_image), str(qcow2)], check=True)
    backend = FileStorage(tmp_path / "base", "raw", tmp_path / "vms")
    base = await stage(backend, qcow2, published(qcow2, fmt="qcow2"))
    assert base.suffix == ".raw" and base.read_bytes() == raw_image.read_bytes()


async def test_bytes_that_do_not_match_the_signed_sha512_are_never_staged(tmp_path: Path, raw_image: Path) -> None:
    for node_format, compression in (("raw", "none"), ("qcow2", "none"), ("raw", "gzip")):
        source = raw_image
        if compression == "gzip":
            source = tmp_path / "golden.gz"
            source.write_bytes(gzip.compress(raw_image.read_bytes()))
        backend = FileStorage(tmp_path / f"base-{node_format}-{compression}", node_format, tmp_path / "vms")
        with pytest.raises(ImageRefused, match="sha512 of the downloaded image"):
            await stage(backend, source, published(source, compression=compression, sha512="ab" * 64))
        assert leftovers(backend.base_dir) == []


async def test_qcow2_with_a_backing_file_is_refused(tmp_path: Path, raw_image: Path) -> None:
    secret = tmp_path / "host-secret.raw"
    secret.write_bytes(b"root:x:0:0" * 1000)
    evil = tmp_path / "evil.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(secret), "-F", "raw", str(evil)], check=True)
    for node_format in ("raw", "qcow2"):
        backend = FileStorage(tmp_path / f"base-{node_format}", node_format, tmp_path / "vms")
        with pytest.raises(ImageRefused, match="backing file"):
            await stage(backend, evil, published(evil, fmt="qcow2"))
        # the same bytes declared raw (a format confusion) are refused too
        with pytest.raises(ImageRefused, match="declared raw but the bytes are a qcow2"):
            await stage(backend, evil, published(evil, fmt="raw"))
        assert leftovers(backend.base_dir) == []


def vmdk_descriptor(path: Path) -> None:
    """A text descriptor whose extent is a host file: staged as data it would be harmless
    here, but anything that probes the base would open /etc/shadow."""
    path.write_bytes(b"# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
                     b'createType="monolithicFlat"\n\nRW 2048 FLAT "/etc/shadow" 0\n' + bytes(4096))


def parallels_disk(path: Path) -> None:
    """Bytes the node's own header check takes for raw, but qemu-img would probe as parallels."""
    subprocess.run(["qemu-img", "create", "-q", "-f", "parallels", str(path), "1M"], check=True)


@pytest.mark.parametrize("make, reason", [
    (vmdk_descriptor, "declared raw but the bytes are a vmdk image"),
    (parallels_disk, "declared raw but qemu-img sees a parallels image"),  # qemu-img's probe must agree
])
async def test_another_format_declared_raw_is_refused(tmp_path: Path, make: Callable[[Path], None],
                                                       reason: str) -> None:
    other = tmp_path / "disk.img"
    make(other)
    for node_format in ("raw", "qcow2"):
        backend = FileStorage(tmp_path / f"base-{node_format}", node_format, tmp_path / "vms")
        with pytest.raises(ImageRefused, match=reason):
            await stage(backend, other, published(other, fmt="raw"))
        assert leftovers(backend.base_dir) == []


async def test_qcow2_with_an_external_data_file_is_refused(tmp_path: Path) -> None:
    evil = tmp_path / "evil.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", f"data_file={tmp_path / 'data.raw'}",
                    str(evil), "1M"], check=True)
    backend = FileStorage(tmp_path / "base", "raw", tmp_path / "vms")
    with pytest.raises(ImageRefused, match="external data file"):
        await stage(backend, evil, published(evil, fmt="qcow2"))
    assert leftovers(backend.base_dir) == []


async def test_corrupt_compressed_stream_is_refused(tmp_path: Path, raw_image: Path) -> None:
    packed = tmp_path / "golden.xz"
    data = bytearray(lzma.compress(raw_image.read_bytes(), preset=0))
    data[len(data) // 2] ^= 0xFF
    packed.write_bytes(bytes(data))
    backend = FileStorage(tmp_path / "base", "raw", tmp_path / "vms")
    with pytest.raises(ImageRefused, match="cannot decompress"):
        await stage(backend, packed, published(packed, compression="xz"))
    assert leftovers(backend.base_dir) == []


async def test_sweep_removes_leftovers_of_a_crash_but_no_base(tmp_path: Path, raw_image: Path) -> None:
    backend = FileStorage(tmp_path / "base", "raw", tmp_path / "vms")
    base = await stage(backend, raw_image, published(raw_image))
    (backend.base_dir / (".staging-" + "a" * 128 + ".raw")).write_bytes(b"half")
    assert await backend.sweep() == [".staging-" + "a" * 128 + ".raw"]
    assert leftovers(backend.base_dir) == [base.name]


@pytest.fixture
def small_disk(tmp_path: Path) -> Path:
    with small_tmpfs(tmp_path / "small", "16m") as mount:
        yield mount


async def test_disk_full_while_staging(tmp_path: Path, small_disk: Path) -> None:
    backend = FileStorage(small_disk / "base", "raw", tmp_path / "vms")
    small = write_image(tmp_path / "small.raw", 4 * 2**20, seed=2)
    packed_small = tmp_path / "small.gz"
    packed_small.write_bytes(gzip.compress(small.read_bytes()))
    big = write_image(tmp_path / "big.raw", 24 * 2**20, seed=3)
    packed_big = tmp_path / "big.gz"
    packed_big.write_bytes(gzip.compress(big.read_bytes()))
    first = await stage(backend, packed_small, published(packed_small, compression="gzip"))
    with pytest.raises(StageFailed, match="disk full"):
        await stage(backend, packed_big, published(packed_big, compression="gzip"))
    assert leftovers(backend.base_dir) == [first.name], "no partial base; the other image is unaffected"
    assert first.read_bytes() == small.read_bytes()


@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
async def test_a_sha512_hashed_while_downloading_spares_the_pass_and_a_wrong_one_is_checked(
        tmp_path: Path, raw_image: Path, fmt: str) -> None:
    """The link (or conversion) of a download whose sha512 was hashed while it arrived needs
    no second pass; a claimed sha512 that is not the signed one makes the pass run, and the
    file's own bytes decide."""
    backend = FileStorage(tmp_path / "base", fmt, tmp_path / "vms")
    image = published(raw_image)
    metadata = metadata_for(image, fmt, "http://c", 3)
    passes: list[int] = []
    staged = await backend.stage(raw_image, image, metadata, passes.append, known_sha512=image.sha512)
    assert passes == [], "no whole-image pass: the sha512 is known from the download"
    assert staged.format == fmt and Path(staged.location).exists()
    await backend.remove(image.sha512)

    staged = await backend.stage(raw_image, image, metadata, passes.append, known_sha512="0" * 128)
    assert passes, "a claim that is not the signed sha512: the bytes are hashed again"
    await backend.remove(image.sha512)

    wrong = published(raw_image, sha512="1" * 128)  # the signed list says other bytes
    with pytest.raises(ImageRefused):
        await backend.stage(raw_image, wrong, metadata_for(wrong, fmt, "http://c", 3), lambda n: None,
                            known_sha512=image.sha512)
    assert leftovers(tmp_path / "base") == []
