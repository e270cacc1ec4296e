r"""X.509 distinguished names: OpenSSL's one-line form (``/C=CH/O=CERN/CN=name``), RFC 4514,
and comparing them *structurally*.

HEPiX lists name the endorser by ``hv:dn`` and its CA by ``hv:ca`` in the one-line form.
Names are never compared as one-line strings: a value may itself hold ``/``, so a
certificate whose O is ``vmic demo/CN=endorser`` (and has no CN) prints exactly like
``/O=vmic demo/CN=endorser``. :func:`same_name` compares a certificate's RDN sequence
with the configured text parsed into RDNs; :func:`oneline` escapes ``/`` and ``\`` in
values (``\/``), so that what it shows can be read back as the same name.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.x509.oid import NameOID

_SHORT = {
    NameOID.COUNTRY_NAME: "C",
    NameOID.STATE_OR_PROVINCE_NAME: "ST",
    NameOID.LOCALITY_NAME: "L",
    NameOID.ORGANIZATION_NAME: "O",
    NameOID.ORGANIZATIONAL_UNIT_NAME: "OU",
    NameOID.COMMON_NAME: "CN",
    NameOID.EMAIL_ADDRESS: "emailAddress",
    NameOID.DOMAIN_COMPONENT: "DC",
    NameOID.SERIAL_NUMBER: "serialNumber",
}
_OIDS = {short: oid for oid, short in _SHORT.items()}


def oneline(name: x509.Name) -> str:
    r"""``/C=CH/O=CERN/CN=x`` in certificate order (as ``openssl x509 -subject`` prints it),
    with ``\``, ``/`` and ``+`` inside values escaped."""
    parts = []
    for rdn in name.rdns:
        pieces = []
        for attr in rdn:
            key = _SHORT.get(attr.oid, attr.oid.dotted_string)
            value = str(attr.value).replace("\\", "\\\\").replace("/", "\\/").replace("+", "\\+")
            pieces.append(f"{key}={value}")
        parts.append("/" + "+".join(pieces))
    return "".join(parts)


def _unescape(text: str) -> str:
    r"""``\x`` -> ``x``."""
    out, chars = [], iter(text)
    for char in chars:
        out.append(next(chars, "") if char == "\\" else char)
    return "".join(out)


def _escaped_split(text: str, separator: str) -> list[str]:
    """``text`` split at every unescaped ``separator``, the escapes kept."""
    parts, current, index = [], "", 0
    while index < len(text):
        char = text[index]
        if char == "\\" and index + 1 < len(text):
            current += text[index:index + 2]
            index += 2
            continue
        if char == separator:
            parts.append(current)
            current = ""
        else:
            current += char
        index += 1
    parts.append(current)
    return parts


def parse_oneline(text: str) -> x509.Name:
    r"""The inverse of :func:`oneline` (``\/`` is a slash inside a value, ``+`` joins the
    attributes of one multi-valued RDN), for the attribute types listed above."""
    if not text.startswith("/"):
        raise ValueError(f"not a one-line DN (must start with '/'): {text[:200]!r}")
    rdns = []
    for rdn_text in _escaped_split(text[1:], "/"):
        attrs = []
        for part in _escaped_split(rdn_text, "+"):
            key, sep, raw = part.partition("=")
            value = _unescape(raw)
            if not sep or key not in _OIDS or not value:
                raise ValueError(f"cannot read DN component {part[:100]!r} in {text[:200]!r}")
            attrs.append(x509.NameAttribute(_OIDS[key], value))
        rdns.append(x509.RelativeDistinguishedName(attrs))
    return x509.Name(rdns)


def parse_dn(text: str) -> x509.Name:
    """A DN as configuration gives it: OpenSSL's one-line form (starts with ``/``) or
    RFC 4514 (``CN=endorser,O=Site,C=CH``, most specific first)."""
    if text.startswith("/"):
        return parse_oneline(text)
    try:
        return x509.Name.from_rfc4514_string(text)
    except ValueError as exc:
        raise ValueError(f"cannot read the DN {text[:200]!r}: {exc}") from None


def _structure(name: x509.Name) -> list[frozenset[tuple[str, str]]]:
    return [frozenset((attr.oid.dotted_string, str(attr.value)) for attr in rdn) for rdn in name.rdns]


def same_name(name: x509.Name, text: str) -> bool:
    """Whether a certificate's ``name`` is the DN ``text`` (one-line or RFC 4514), RDN by
    RDN and attribute by attribute; a DN that cannot be read matches nothing."""
    try:
        wanted = parse_dn(text)
    except ValueError:
        return False
    return _structure(name) == _structure(wanted)
