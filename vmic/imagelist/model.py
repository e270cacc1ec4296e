"""The HEPiX image list as dataclasses, and its exact JSON layout.

The layout is the one HEPiX tools read and write (hepixvmitrust, vmcatcher, vmcaster,
AppDB)::

    {"hv:imagelist": {
        "dc:identifier": "<list uuid>", "dc:title": ..., "hv:version": "42",
        "dc:date:created": "2026-11-24T10:00:00Z", "dc:date:expires": ...,
        "hv:endorser": {"hv:x509": {"hv:dn": "/C=../CN=..", "hv:ca": ..., ...}},
        "hv:images": [{"hv:image": {"dc:identifier": ..., "sl:checksum:sha512": ...}}]}}

Reading is lenient where real lists differ (AppDB gives numbers as strings) and keeps
unknown fields (``ad:*``, ``vmic:*``) so that a list can be re-served unchanged.
Writing is canonical: sorted keys, two-space indent, CRLF line ends (S/MIME canonical
text, so ``openssl smime -verify`` gives back exactly these bytes).

Everything here is pure: no I/O.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

from ..errors import MalformedList
from . import extensions

DATE_FORMAT = "%Y-%m-%dT%H:%M:%SZ"

#: Extension fields vmic adds to an image (HEPiX readers keep or ignore them).
EXT_COMPRESSION = extensions.COMPRESSION
EXT_PUBLISHER = extensions.PUBLISHER
EXT_CREATED = extensions.CREATED
EXT_EXPIRES = extensions.EXPIRES

FORMATS = ("raw", "qcow2")
COMPRESSIONS = ("none", "zstd", "gzip", "xz")


def format_date(value: dt.datetime) -> str:
    return value.astimezone(dt.timezone.utc).strftime(DATE_FORMAT)


def parse_date(value: Any, what: str) -> dt.datetime:
    try:
        return dt.datetime.strptime(str(value), DATE_FORMAT).replace(tzinfo=dt.timezone.utc)
    except ValueError:
        raise MalformedList(f"{what}: {value!r} is not a date of the form {DATE_FORMAT}") from None


def _int(value: Any, what: str) -> int:
    """Numbers may come as JSON numbers or as strings (AppDB writes strings)."""
    if isinstance(value, bool):
        raise MalformedList(f"{what}: {value!r} is not a number")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise MalformedList(f"{what}: {value!r} is not a whole number") from None
    if number < 0:
        raise MalformedList(f"{what}: {number} is negative")
    return number


def _str(value: Any, what: str) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        raise MalformedList(f"{what}: expected text, got {type(value).__name__}")
    return str(value)


# python attribute -> (HEPiX key, is integer)
IMAGE_FIELDS: dict[str, tuple[str, bool]] = {
    "identifier": ("dc:identifier", False),
    "title": ("dc:title", False),
    "description": ("dc:description", False),
    "uri": ("hv:uri", False),
    "size": ("hv:size", True),
    "sha512": ("sl:checksum:sha512", False),
    "version": ("hv:version", False),
    "hypervisor": ("hv:hypervisor", False),
    "format": ("hv:format", False),
    "os": ("sl:os", False),
    "osversion": ("sl:osversion", False),
    "arch": ("sl:arch", False),
    "comments": ("sl:comments", False),
    "ram_minimum": ("hv:ram_minimum", True),
    "core_minimum": ("hv:core_minimum", True),
}
REQUIRED_IMAGE_FIELDS = ("identifier", "uri", "size", "sha512", "version")


@dataclass(frozen=True)
class Image:
    """One image version in a list. ``extra`` holds every field not named above."""

    identifier: str
    uri: str
    size: int
    sha512: str
    version: str
    title: str = ""
    description: str = ""
    hypervisor: str = "QEMU,KVM"
    format: str = "raw"
    os: str = ""
    osversion: str = ""
    arch: str = "x86_64"
    comments: str = ""
    ram_minimum: int = 0
    core_minimum: int = 0
    extra: dict[str, Any] = field(default_factory=dict, compare=True)

    @property
    def compression(self) -> str:
        return str(self.extra.get(EXT_COMPRESSION, "none"))

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = dict(self.extra)
        for attr, (key, _) in IMAGE_FIELDS.items():
            body[key] = getattr(self, attr)
        return {"hv:image": body}

    @classmethod
    def from_json(cls, entry: Any, where: str = "image") -> Image:
        if not isinstance(entry, dict) or not isinstance(entry.get("hv:image"), dict):
            raise MalformedList(f"{where}: expected an object {{'hv:image': {{...}}}}")
        body = dict(entry["hv:image"])
        values: dict[str, Any] = {}
        for attr, (key, is_int) in IMAGE_FIELDS.items():
            if key not in body:
                if attr in REQUIRED_IMAGE_FIELDS:
                    raise MalformedList(f"{where}: missing {key}")
                continue
            raw = body.pop(key)
            values[attr] = _int(raw, f"{where} {key}") if is_int else _str(raw, f"{where} {key}")
        sha = values["sha512"].lower()
        if len(sha) != 128 or any(c not in "0123456789abcdef" for c in sha):
            raise MalformedList(f"{where}: sl:checksum:sha512 is not 128 hex digits")
        values["sha512"] = sha
        return cls(**values, extra=body)


@dataclass(frozen=True)
class Endorser:
    """Who signs the list: the certificate subject (dn) and its issuer (ca)."""

    dn: str
    ca: str
    email: str = ""
    creator: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "hv:x509": {
                "hv:dn": self.dn,
                "hv:ca": self.ca,
                "hv:email": self.email,
                "dc:creator": self.creator,
            }
        }

    @classmethod
    def from_json(cls, body: Any) -> Endorser:
        x509 = body.get("hv:x509") if isinstance(body, dict) else None
        if not isinstance(x509, dict) or "hv:dn" not in x509 or "hv:ca" not in x509:
            raise MalformedList("hv:endorser: expected {'hv:x509': {'hv:dn': ..., 'hv:ca': ...}}")
        return cls(
            dn=_str(x509["hv:dn"], "hv:dn"),
            ca=_str(x509["hv:ca"], "hv:ca"),
            email=_str(x509.get("hv:email"), "hv:email"),
            creator=_str(x509.get("dc:creator"), "dc:creator"),
        )


@dataclass(frozen=True)
class ImageList:
    """A whole image list. ``version`` is the list's ``hv:version`` as a number."""

    identifier: str
    version: int
    created: dt.datetime
    expires: dt.datetime
    endorser: Endorser
    images: tuple[Image, ...] = ()
    title: str = ""
    description: str = ""
    source: str = ""
    uri: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def replace(self, **changes: Any) -> ImageList:
        return dataclasses.replace(self, **changes)

    def image(self, identifier: str) -> Image | None:
        return next((i for i in self.images if i.identifier == identifier), None)

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = dict(self.extra)
        body.update(
            {
                "dc:identifier": self.identifier,
                "dc:title": self.title,
                "dc:description": self.description,
                "dc:source": self.source,
                "dc:date:created": format_date(self.created),
                "dc:date:expires": format_date(self.expires),
                "hv:version": str(self.version),
                "hv:uri": self.uri,
                "hv:endorser": self.endorser.to_json(),
                "hv:images": [image.to_json() for image in self.images],
            }
        )
        return {"hv:imagelist": body}

    def to_bytes(self) -> bytes:
        """The canonical bytes that get signed and served (CRLF line ends)."""
        text = json.dumps(self.to_json(), sort_keys=True, indent=2, ensure_ascii=True)
        return (text + "\n").replace("\n", "\r\n").encode("ascii")

    @classmethod
    def from_json(cls, document: Any) -> ImageList:
        if not isinstance(document, dict) or not isinstance(document.get("hv:imagelist"), dict):
            raise MalformedList("top level must be an object with 'hv:imagelist'")
        body = dict(document["hv:imagelist"])
        for key in ("dc:identifier", "hv:version", "dc:date:created", "dc:date:expires", "hv:endorser"):
            if key not in body:
                raise MalformedList(f"hv:imagelist: missing {key}")
        images_raw = body.pop("hv:images", [])
        if not isinstance(images_raw, list):
            raise MalformedList("hv:images must be a list")
        images = tuple(Image.from_json(entry, f"hv:images[{n}]") for n, entry in enumerate(images_raw))
        seen: set[str] = set()
        for image in images:
            if image.identifier in seen:
                raise MalformedList(f"image identifier {image.identifier} appears twice in the list")
            seen.add(image.identifier)
        return cls(
            identifier=_str(body.pop("dc:identifier"), "dc:identifier"),
            version=_version_number(body.pop("hv:version")),
            created=parse_date(body.pop("dc:date:created"), "dc:date:created"),
            expires=parse_date(body.pop("dc:date:expires"), "dc:date:expires"),
            endorser=Endorser.from_json(body.pop("hv:endorser")),
            images=images,
            title=_str(body.pop("dc:title", ""), "dc:title"),
            description=_str(body.pop("dc:description", ""), "dc:description"),
            source=_str(body.pop("dc:source", ""), "dc:source"),
            uri=_str(body.pop("hv:uri", ""), "hv:uri"),
            extra=body,
        )

    @classmethod
    def parse(cls, data: bytes) -> ImageList:
        try:
            document = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise MalformedList(f"not JSON: {exc}") from None
        except RecursionError:
            raise MalformedList("nested too deeply for an image list") from None
        return cls.from_json(document)


def _version_number(value: Any) -> int:
    """List versions compare numerically. vmcaster writes ``"2"``; some write ``"2.0"``."""
    text = str(value).strip()
    head = text.split(".", 1)[0] if text.replace(".", "", 1).isdigit() else text
    return _int(head, "hv:version")
