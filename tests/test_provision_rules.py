"""The provisioning shim's pure parts, table-driven: requests, durations, CPU lists, the
domain XML (validated by libvirt's own schema), the context ISO's files."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from nodecache.provision.context import build_iso, context_files, read_iso
from nodecache.provision.domain import DomainSpec, domain_xml
from nodecache.provision.request import VmRequest, parse_cpuset, parse_duration
from vmic.errors import BadRequest


def request(**body: Any) -> VmRequest:
    return VmRequest.from_json({"image": "alice/golden", "name": "vm-1", **body}, 172800.0, 2048, 1, host_cpus=4)


@pytest.mark.parametrize("body, message", [
    ({"name": "../etc"}, "name '../etc'"),
    ({"name": "Web"}, "lowercase"),
    ({"name": "-x"}, "starting with"),
    ({"name": "a" * 64}, "1-63"),
    ({"name": ""}, "name is required"),
    ({"image": 7}, "image is required"),
    ({"memory": 8}, "out of range"),
    ({"memory": "lots"}, "integers"),
    ({"vcpus": 0}, "out of range"),
    ({"pin": "1-0"}, "empty range"),
    ({"pin": "a"}, "not a CPU list"),
    ({"ttl": "soon"}, "not a duration"),
    ({"ttl": "0s"}, "is not a positive duration"),
    ({"context": {"lower": "x"}}, "shell variable name"),
    ({"context": {"X": 1}}, "map names to strings"),
    ({"ssh_keys": ["a\nb"]}, "one-line"),
    ({"colour": "blue"}, "unknown field"),
    # a final newline never passes a name check (re.match with "$" let it through)
    ({"name": "vm1\n"}, "lowercase letters"),
    ({"context": {"SOMECMD\n": "x"}}, "shell variable name"),
    # absurd numbers: a 400 with the reason, never an OverflowError or a huge allocation
    ({"ttl": "99999999999999999999d"}, "not a duration"),
    ({"ttl": float("inf")}, "not a positive duration"),
    ({"ttl": float("nan")}, "not a positive duration"),
    ({"ttl": 1e308}, "more than ten years"),
    ({"ttl": "3651d"}, "more than ten years"),
    ({"memory": float("inf")}, "integers"),
    ({"pin": "0-2000000"}, "not a CPU list"),
    ({"pin": "0-100000"}, "CPU 100000 is not one of this host's 4 CPUs"),
    ({"pin": "4"}, "CPU 4 is not one of"),
    ({"pin": [0, True]}, "not a list of CPU numbers"),
    ({"pin": ",".join(["1"] * 3000)}, "too long"),
])
def test_bad_requests(body: dict[str, Any], message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        request(**body)


def test_defaults_and_parsing() -> None:
    vm = request(pin="0,2-3", ttl="90m", context={"SITE": "x"})
    assert (vm.memory_mib, vm.vcpus, vm.pin, vm.ttl_seconds) == (2048, 1, (0, 2, 3), 5400)
    assert request().ttl_seconds == 172800
    assert parse_duration("2d") == 172800 and parse_duration(30) == 30
    assert parse_cpuset([3, 1, 3]) == (1, 3) and parse_cpuset("") == ()


SPEC = DomainSpec(name="vm-1", uuid="6f1e8c9e-4b7c-4a3f-9a3e-0c2d1b0a9f11", memory_mib=512, vcpus=3, pin=(0, 1),
                  disk="/c/vms/vm-1.qcow2", disk_type="file", base="/c/base/ab.raw", base_format="raw",
                  iso="/c/vms/vm-1.iso", image_identifier="id-1", image_sha512="ab" * 64,
                  expires="2026-11-27T00:00:00Z", domain_type="kvm")


@pytest.mark.parametrize("spec", [
    SPEC,
    DomainSpec(**{**SPEC.__dict__, "disk": "/dev/vg/vm-vm-1", "disk_type": "block", "base": "", "pin": (),
                  "domain_type": "qemu"}),
    DomainSpec(**{**SPEC.__dict__, "domain_type": "test"}),
], ids=["overlay", "lvm snapshot", "test driver"])
def test_domain_xml_validates_against_libvirts_schema(spec: DomainSpec, tmp_path: Path) -> None:
    if shutil.which("virt-xml-validate") is None:
        pytest.skip("virt-xml-validate (libvirt-clients) is not installed")
    path = tmp_path / "domain.xml"
    path.write_text(domain_xml(spec))
    result = subprocess.run(["virt-xml-validate", str(path), "domain"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr + path.read_text()


def test_domain_xml_content() -> None:
    xml = domain_xml(SPEC)
    assert "<backingStore type=\"file\">" in xml and '<format type="raw" />' in xml
    assert '<vcpupin vcpu="2" cpuset="0" />' in xml, "vCPUs wrap round the pinned CPUs"
    assert 'sha512="' + "ab" * 64 in xml and "<vmic:expires>2026-11-27T00:00:00Z</vmic:expires>" in xml


def test_context_iso_is_cidata_with_hepix_files(tmp_path: Path) -> None:
    iso = tmp_path / "ctx.iso"
    build_iso(iso, context_files("web-1", "iid-1", "#cloud-config\npackages: [htop]\n", {"ROLE": "batch worker"},
                                 ("ssh-ed25519 AAA k",)))
    files = read_iso(iso)
    assert sorted(files) == ["authorized_keys", "context.sh", "meta-data", "network-config", "prolog.sh",
                             "user-data"]
    assert files["user-data"] == b"#cloud-config\npackages: [htop]\n"
    assert b"ROLE='batch worker'" in files["context.sh"] and b"VMIC_VM_NAME=web-1" in files["context.sh"]
    if shutil.which("blkid"):
        label = subprocess.run(["blkid", "-o", "value", "-s", "LABEL", str(iso)], capture_output=True, text=True)
        assert label.stdout.strip() == "CIDATA"


@pytest.mark.parametrize("name", ["hv001\n", "hv 001", "", "-hv"])
def test_node_names_are_checked_as_a_whole(name: str) -> None:
    from nodecache.config import NodeConfig
    from vmic.errors import ConfigError
    from vmic.preheat import node_from_user_agent

    with pytest.raises(ConfigError, match="node_name"):
        NodeConfig(cache_dir=Path("/nonexistent"), node_name=name)
    if " " not in name:  # (a User-Agent's product token ends at a space)
        assert node_from_user_agent(f"vmic-node/{name}") is None
