"""Every parser of outside bytes, fuzzed (Hypothesis): the only outcomes are a parsed value
or the project's own refusal, never another exception, a hang or a huge allocation.

The default run is short; a long one:  VMIC_FUZZ_EXAMPLES=20000 tools/test tests/test_fuzz.py
"""

from __future__ import annotations

import json
import os
import string
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distributor.tracker.announce import TrackerError, parse_announce, parse_scrape
from nodecache.disk_header import HEAD_BYTES, QCOW2_MAGIC, check, parse_qcow2, probe
from nodecache.errors import ImageRefused
from nodecache.provision.request import VmRequest
from vmic.catalogue.uploads import parse_request
from vmic.errors import BadRequest, MalformedTorrent, VmicError
from vmic.imagelist.dn import parse_dn
from vmic.imagelist.model import ImageList
from vmic.torrents import Torrent
from vmic.units import parse_duration, parse_listen, parse_size

EXAMPLES = int(os.environ.get("VMIC_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 150,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=30,
)
GOOD_LIST = {"hv:imagelist": {
    "dc:identifier": "1a2b3c4d-0000-4000-8000-000000000001", "hv:version": "3",
    "dc:date:created": "2026-11-01T00:00:00Z", "dc:date:expires": "2026-12-01T00:00:00Z",
    "hv:endorser": {"hv:x509": {"hv:dn": "/C=CH/O=x/CN=e", "hv:ca": "/C=CH/O=x/CN=ca", "dc:creator": "x",
                                "hv:email": "e@x"}},
    "hv:images": [{"hv:image": {"dc:identifier": "1a2b3c4d-0000-4000-8000-000000000002",
                                "hv:uri": "http://c/images/1", "hv:size": 10, "sl:checksum:sha512": "a" * 128,
                                "hv:version": "1"}}]}}
LIST_KEYS = ["dc:identifier", "hv:version", "dc:date:created", "dc:date:expires", "hv:endorser", "hv:images",
             "hv:x509", "hv:dn", "hv:image", "hv:uri", "hv:size", "sl:checksum:sha512", "dc:title"]


def mutated(document: Any, draw: Any) -> Any:
    """``document`` with one value somewhere replaced by arbitrary JSON."""
    if isinstance(document, dict) and document and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(document)))
        return {**document, key: mutated(document[key], draw)}
    if isinstance(document, list) and document and draw(st.booleans()):
        index = draw(st.integers(0, len(document) - 1))
        return [*document[:index], mutated(document[index], draw), *document[index + 1:]]
    return draw(JSON)


@st.composite
def hostile_lists(draw: Any) -> bytes:
    kind = draw(st.sampled_from(["mutated", "bytes", "deep", "keys"]))
    if kind == "mutated":
        return json.dumps(mutated(GOOD_LIST, draw)).encode()
    if kind == "deep":  # nesting far beyond what any list needs
        depth = draw(st.integers(100, 200_000))
        return b"[" * depth + b"]" * draw(st.sampled_from([0, depth]))
    if kind == "keys":
        body = {draw(st.sampled_from(LIST_KEYS)): draw(JSON) for _ in range(draw(st.integers(0, 6)))}
        return json.dumps({"hv:imagelist": {**GOOD_LIST["hv:imagelist"], **body}}).encode()
    return draw(st.binary(max_size=200))


def refused_or_parsed(call: Any, *refusals: type[BaseException]) -> None:
    try:
        call()
    except refusals:
        pass


@FUZZ
@given(hostile_lists())
def test_image_list_json(data: bytes) -> None:
    refused_or_parsed(lambda: ImageList.parse(data), VmicError)


@FUZZ
@given(st.text(alphabet=string.printable + "é\\/=,+#\"<>;\0", max_size=80))
def test_distinguished_names(text: str) -> None:
    refused_or_parsed(lambda: parse_dn(text), ValueError)


QUERY_KEYS = ["info_hash", "peer_id", "port", "uploaded", "downloaded", "left", "event", "numwant", "compact",
              "no_peer_id", "ip", "key"]


@st.composite
def queries(draw: Any) -> str:
    pairs = draw(st.lists(st.tuples(st.sampled_from(QUERY_KEYS) | st.text(max_size=8),
                                    st.text(alphabet=string.printable + "%", max_size=30)), max_size=12))
    return "&".join(f"{k}={v}" for k, v in pairs) if draw(st.booleans()) else draw(st.text(max_size=200))


@FUZZ
@given(queries(), st.sampled_from(["10.0.0.1", "::1", "127.0.0.1"]))
def test_tracker_announce_and_scrape(query: str, ip: str) -> None:
    refused_or_parsed(lambda: parse_announce(query, ip), TrackerError)
    refused_or_parsed(lambda: parse_scrape(query), TrackerError)


@FUZZ
@given(st.dictionaries(st.sampled_from(["image", "name", "memory", "vcpus", "pin", "ttl", "user_data", "context",
                                        "ssh_keys", "paused"]) | st.text(max_size=6), JSON, max_size=8) | JSON)
def test_vm_requests(body: Any) -> None:
    refused_or_parsed(lambda: VmRequest.from_json(body, 3600.0, 2048, 1, host_cpus=4), BadRequest)


@FUZZ
@given(st.dictionaries(st.sampled_from(["namespace", "name", "version", "size", "sha512", "identifier", "expires",
                                        "format", "compression", "title", "description", "os", "ram_minimum"])
                       | st.text(max_size=6), JSON, max_size=10) | JSON)
def test_upload_requests(body: Any) -> None:
    refused_or_parsed(lambda: parse_request(body), BadRequest)


@st.composite
def disk_heads(draw: Any) -> bytes:
    kind = draw(st.sampled_from(["qcow2", "vmdk", "bytes"]))
    tail = draw(st.binary(max_size=600))
    if kind == "qcow2":
        return QCOW2_MAGIC + draw(st.binary(min_size=0, max_size=120)) + tail
    if kind == "vmdk":
        return draw(st.sampled_from([b"#", b" ", b"\n", b"version=1\n", b"KDMV", b"COWD"])) + tail
    return tail


@FUZZ
@given(disk_heads(), st.sampled_from(["raw", "qcow2"]))
def test_disk_headers(head: bytes, declared: str) -> None:
    assert isinstance(probe(head[:HEAD_BYTES]), str)
    refused_or_parsed(lambda: check(declared, head), ImageRefused)
    refused_or_parsed(lambda: parse_qcow2(head), ImageRefused)


@FUZZ
@given(st.binary(max_size=300) | st.builds(lambda b: b"d4:info" + b, st.binary(max_size=300)))
def test_torrent_files(data: bytes) -> None:
    refused_or_parsed(lambda: Torrent.parse(data), MalformedTorrent)


@FUZZ
@given(JSON)
def test_sizes_durations_and_addresses_in_configuration(value: Any) -> None:
    for parse in (parse_size, parse_duration, parse_listen):
        refused_or_parsed(lambda: parse(value), ValueError)
