"""X.509 distinguished names in OpenSSL's one-line form (``/C=CH/O=CERN/CN=name``).

HEPiX lists name the endorser by ``hv:dn`` and its CA by ``hv:ca`` in this form.
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
    """``/C=CH/O=CERN/CN=x`` in certificate order (as ``openssl x509 -subject`` prints it)."""
    parts = []
    for rdn in name.rdns:
        for attr in rdn:
            key = _SHORT.get(attr.oid, attr.oid.dotted_string)
            parts.append(f"/{key}={attr.value}")
    return "".join(parts)


def parse_oneline(text: str) -> x509.Name:
    """The inverse of :func:`oneline`, for the attribute types listed above."""
    if not text.startswith("/"):
        raise ValueError(f"not a one-line DN (must start with '/'): {text!r}")
    attrs = []
    for part in text[1:].split("/"):
        key, sep, value = part.partition("=")
        if not sep or key not in _OIDS or not value:
            raise ValueError(f"cannot read DN component {part!r} in {text!r}")
        attrs.append(x509.NameAttribute(_OIDS[key], value))
    return x509.Name(attrs)
