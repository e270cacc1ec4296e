"""Which catalogue a follower follows and whom it trusts: the catalogue table that every
follower's config spells the same way (node ``[[nodecache.catalogue]]``, tracker
``[tracker.catalogue]``, seeder ``[seeder.catalogue]``)::

    url = "https://images.example.org"          # the catalogue's base URL
    ca = "/etc/vmic/ca"                          # CA (file or directory) of the list's endorser
    endorser_dn = "/C=CH/O=Site/CN=endorser"     # who must have signed the list
    tls_ca = "/etc/vmic/tls-ca.pem"              # optional: CA of the catalogue's HTTPS certificate,
                                                 # trusted besides the system's
    list_identifier = "..."                      # optional: refuse a list with another dc:identifier
    max_list_bytes = "16M"                       # optional: a longer list is refused unread
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from .capped import MAX_LIST_BYTES
from .config import check_renamed, load_section
from .errors import ConfigError
from .imagelist.dn import parse_dn
from .units import parse_size

T = TypeVar("T")
KEYS = ("url", "ca", "endorser_dn", "tls_ca", "list_identifier", "max_list_bytes")


@dataclass(frozen=True)
class CatalogueSource:
    """Which catalogue to follow and whom to trust for its list."""

    url: str  #: the catalogue's base URL
    ca: Path  #: CA file or directory of its endorser
    #: who must have signed the list (one-line /C=../CN=.. or RFC 4514), compared RDN by RDN
    endorser_dn: str
    list_identifier: str | None = None  #: if set, a list with another identifier is refused
    #: a list of more bytes is refused as list_too_large before it is parsed or checked
    max_list_bytes: int = MAX_LIST_BYTES
    #: CA file or directory of the catalogue's HTTPS certificate, trusted besides the system's
    tls_ca: Path | None = None

    @property
    def list_url(self) -> str:
        return f"{self.url.rstrip('/')}/imagelist"


def catalogue_source(table: Any, where: str) -> CatalogueSource:
    """One catalogue table, checked: every key known, url/ca/endorser_dn set, the DN
    parsable, the size cap within 4K..1G, an http(s) URL."""
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: expected a table (url, ca, endorser_dn, ...)")
    unknown = set(table) - set(KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(sorted(unknown))}")
    for key in ("url", "ca", "endorser_dn"):
        if not table.get(key):
            raise ConfigError(f"{where}: {key} is not set")
    url = str(table["url"])
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"{where}: url {url[:80]!r} must start with http:// or https://")
    try:
        parse_dn(str(table["endorser_dn"]))
    except ValueError as exc:
        raise ConfigError(f"{where}: endorser_dn: {exc}") from None
    try:
        max_list_bytes = parse_size(table.get("max_list_bytes", MAX_LIST_BYTES))
    except ValueError as exc:
        raise ConfigError(f"{where}: max_list_bytes: {exc}") from None
    if not 2**12 <= max_list_bytes <= 2**30:
        raise ConfigError(f"{where}: max_list_bytes must be between 4K and 1G")
    tls_ca = Path(str(table["tls_ca"])) if table.get("tls_ca") else None
    identifier = table.get("list_identifier")
    return CatalogueSource(url, Path(str(table["ca"])), str(table["endorser_dn"]),
                           str(identifier) if identifier else None, max_list_bytes, tls_ca)


def tls_context(extra_cas: Iterable[Path | None]) -> ssl.SSLContext:
    """The TLS trust of a daemon's HTTPS client: the system's CAs plus each ``tls_ca``
    (a PEM file or a hashed directory). A missing file is a one-line ConfigError."""
    context = ssl.create_default_context()
    for ca in extra_cas:
        if ca is None:
            continue
        try:
            if ca.is_dir():
                context.load_verify_locations(capath=str(ca))
            else:
                context.load_verify_locations(cafile=str(ca))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"tls_ca {ca}: cannot be read as CA certificates ({exc})") from None
    return context


def load_follower(cls: type[T], section: str, table: Mapping[str, Any], env: Mapping[str, str] | None = None,
                  **fixed: Any) -> T:
    """A follower's ``[section]`` (tracker, seeder): its ``[section.catalogue]`` table parsed
    as every follower's, the rest by :func:`vmic.config.load_section`."""
    rest = dict(table)
    check_renamed(section, rest)
    if "catalogue" not in rest:
        raise ConfigError(f"[{section}.catalogue] is missing (url, ca, endorser_dn: the catalogue to follow)")
    source = catalogue_source(rest.pop("catalogue"), f"[{section}.catalogue]")
    return load_section(cls, section, rest, env, catalogue=source, **fixed)
