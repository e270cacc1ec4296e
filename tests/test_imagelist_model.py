"""The HEPiX list model: exact layout out, lenient reading in (pure, no I/O)."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from vmic.errors import MalformedList
from vmic.imagelist.model import Endorser, Image, ImageList

SHA = "ab" * 64
NOW = dt.datetime(2026, 11, 24, 12, 0, 0, tzinfo=dt.timezone.utc)


def sample(**changes: object) -> ImageList:
    image = Image(identifier="8a1e2c55-8a2b-4c3f-9e53-5a1f3c0d9b11", uri="http://x/images/1", size=1024,
                  sha512=SHA, version="2", title="SLC6 batch", os="SLC", osversion="6", ram_minimum=2048,
                  core_minimum=1, extra={"ad:appid": "42"})
    base = ImageList(identifier="0b7d0d3e-2f38-4f6e-a1a4-3f4c1a5d2e77", version=7, created=NOW,
                     expires=NOW + dt.timedelta(days=7), endorser=Endorser("/C=CH/CN=e", "/C=CH/CN=ca", "e@x", "me"),
                     images=(image,), title="list", extra={"ad:vo": "atlas"})
    return base.replace(**changes)


def test_layout_has_the_hepix_fields_with_sorted_keys_and_crlf() -> None:
    data = sample().to_bytes()
    assert b"\r\n" in data and b"\n" not in data.replace(b"\r\n", b"")
    document = json.loads(data)
    body = document["hv:imagelist"]
    assert list(document) == ["hv:imagelist"]
    for key in ("dc:identifier", "dc:title", "dc:description", "dc:source", "dc:date:created",
                "dc:date:expires", "hv:version", "hv:uri", "hv:endorser", "hv:images"):
        assert key in body
    assert body["dc:date:created"] == "2026-11-24T12:00:00Z"
    assert body["hv:endorser"]["hv:x509"] == {"hv:dn": "/C=CH/CN=e", "hv:ca": "/C=CH/CN=ca",
                                              "hv:email": "e@x", "dc:creator": "me"}
    image = body["hv:images"][0]["hv:image"]
    assert set(image) >= {"dc:identifier", "dc:title", "dc:description", "hv:uri", "hv:size",
                          "sl:checksum:sha512", "hv:version", "hv:hypervisor", "hv:format", "sl:os",
                          "sl:osversion", "sl:arch", "sl:comments", "hv:ram_minimum", "hv:core_minimum"}
    assert data == json.dumps(document, sort_keys=True, indent=2).replace("\n", "\r\n").encode() + b"\r\n"


def test_round_trip_keeps_extension_fields() -> None:
    original = sample()
    parsed = ImageList.parse(original.to_bytes())
    assert parsed == original
    assert parsed.extra == {"ad:vo": "atlas"}
    assert parsed.images[0].extra == {"ad:appid": "42"}
    assert parsed.to_bytes() == original.to_bytes()


def test_reads_numbers_given_as_strings_like_appdb() -> None:
    document = json.loads(sample().to_bytes())
    body = document["hv:imagelist"]
    body["hv:version"] = "7"
    image = body["hv:images"][0]["hv:image"]
    image["hv:size"], image["hv:ram_minimum"], image["hv:core_minimum"] = "1024", "2048", "1"
    parsed = ImageList.from_json(document)
    assert parsed.version == 7 and parsed.images[0].size == 1024 and parsed.images[0].ram_minimum == 2048


def _broken(mutate) -> bytes:  # type: ignore[no-untyped-def]
    document = json.loads(sample().to_bytes())
    mutate(document["hv:imagelist"])
    return json.dumps(document).encode()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"not json", "not JSON"),
        (b"[]", "hv:imagelist"),
        (_broken(lambda b: b.pop("hv:version")), "missing hv:version"),
        (_broken(lambda b: b.update({"dc:date:expires": "tomorrow"})), "dc:date:expires"),
        (_broken(lambda b: b.update({"hv:version": "seven"})), "hv:version"),
        (_broken(lambda b: b["hv:images"][0]["hv:image"].update({"hv:size": "-1"})), "negative"),
        (_broken(lambda b: b["hv:images"][0]["hv:image"].update({"hv:size": "big"})), "hv:size"),
        (_broken(lambda b: b["hv:images"][0]["hv:image"].update({"sl:checksum:sha512": "abc"})), "128 hex"),
        (_broken(lambda b: b["hv:images"][0]["hv:image"].pop("hv:uri")), "missing hv:uri"),
        (_broken(lambda b: b["hv:images"].append(b["hv:images"][0])), "appears twice"),
        (_broken(lambda b: b.update({"hv:endorser": {}})), "hv:endorser"),
        (_broken(lambda b: b.update({"hv:images": {}})), "hv:images must be a list"),
    ],
)
def test_malformed_lists_are_refused_with_the_reason(data: bytes, reason: str) -> None:
    with pytest.raises(MalformedList, match=reason):
        ImageList.parse(data)
