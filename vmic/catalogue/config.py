"""Settings of the catalogue service: the ``[catalogue]`` table of the TOML config.

Example::

    [catalogue]
    data_dir = "/var/lib/vmic"
    listen = "0.0.0.0:8470"
    public_url = "https://images.example.org"
    endorser_cert = "/etc/vmic/endorser.pem"
    endorser_key = "/etc/vmic/endorser.key"
    # database = "postgresql://vmic@db/vmic"   (default: SQLite in data_dir)

    [catalogue.publishers.alice]
    token_sha256 = "..."          # from `vmic token alice`
    namespaces = ["alice", "cern-batch"]
    admin = true                  # may manage partner subscriptions (vmic subscribe)

    [catalogue.publishers.bob]    # authenticates with a TLS client certificate instead
    client_dn = "/C=CH/O=CERN/CN=bob"
    # (needs tls_cert, tls_key and tls_client_ca in [catalogue])
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509

from ..capped import MAX_LIST_BYTES
from ..config import Duration, Listen, Listens, Size, load_section, read_toml
from ..errors import ConfigError
from ..imagelist.dn import same_name
from ..units import format_listen
from .names import check_name


@dataclass(frozen=True)
class Publisher:
    name: str
    #: sha256 of the publisher's token (``vmic token`` prints it; the token itself is never
    #: stored); a publisher needs this or client_dn
    token_sha256: str = ""
    #: namespaces it may publish in (default: its name)
    namespaces: tuple[str, ...] = ()
    #: may manage partner subscriptions
    admin: bool = False
    #: subject of the TLS client certificate that authenticates this publisher (one-line form)
    client_dn: str | None = None


@dataclass(frozen=True)
class CatalogueConfig(Listens):
    #: blobs, torrents, keys (by default) and the SQLite database
    data_dir: Path
    #: where publishers and subscribers reach this catalogue
    listen: Listen = "127.0.0.1:8470"
    #: the URL subscribers reach this catalogue at (default: http(s)://listen)
    public_url: str = ""
    #: the endorser's certificate, which signs the list (default <data_dir>/keys/endorser.pem)
    endorser_cert: Path | None = None
    #: its private key (default <data_dir>/keys/endorser.key; 0600)
    endorser_key: Path | None = None
    #: hv:email of the list's endorser
    endorser_email: str = ""
    #: empty: SQLite file ``<data_dir>/catalogue.sqlite``; or ``postgresql://user@host/db``
    #: (the password from ``database_password_file``, PGPASSWORD or ~/.pgpass, never here)
    database: str = ""
    #: a file holding the database password alone (e.g. systemd's LoadCredential=)
    database_password_file: Path | None = None
    #: dc:title and dc:description of the signed list
    list_title: str = "vmic image list"
    #: (see list_title)
    list_description: str = "Images published through vmic"
    #: the list's dc:identifier; empty: generated once and kept in the database
    list_identifier: str = ""
    #: how long a signed list stays valid; it is re-signed at half of that
    list_lifetime: Duration = 7 * 86400.0
    #: the largest image an upload may declare
    max_upload_bytes: Size = 64 * 2**30
    #: /readyz fails when the endorser certificate has fewer days left
    ready_cert_days: float = 14.0
    #: slow clients: a connection that has not sent a whole request's headers (or sits idle)
    #: this long is closed; a request body that stalls this long ends (an upload keeps what
    #: arrived; a JSON body is a 408)
    header_timeout: Duration = 30.0
    #: (see header_timeout)
    body_timeout: Duration = 60.0
    #: a revoked image's bytes are kept this long: ``vmic restore`` brings it back until then
    revoke_grace: Duration = 7 * 86400.0
    #: an upload that received nothing for this long is dropped, with its bytes
    upload_expiry: Duration = 86400.0
    #: uploads one publisher may have open at once (429 beyond), and their bytes (507 beyond)
    max_uploads_per_publisher: int = 10
    #: (see max_uploads_per_publisher)
    max_upload_bytes_per_publisher: Size = 256 * 2**30
    #: free bytes kept on the data directory's disk for the database, revocation and
    #: re-signing: uploads that would need them are refused (507)
    free_space_reserve: Size = 2**30
    #: a partner's signed list of more bytes is refused (list_too_large) before it is parsed
    max_partner_list_bytes: Size = MAX_LIST_BYTES
    #: CA file or directory of partner catalogues' HTTPS certificates, trusted besides the system's
    tls_ca: Path | None = None
    #: where partner mirroring's BitTorrent session listens (empty: this catalogue's host, any free port)
    mirror_listen: str = ""
    #: partner mirroring may also fetch from the partner catalogue's web seed (false: only from
    #: the partner's swarm, where its seeders carry the load)
    mirror_web_seed: bool = True
    #: announce URLs put in every image's torrent, comma-separated (empty: web seed only)
    trackers: str = ""
    #: "v1" (what Debian's aria2c and transmission interoperate with) or "hybrid" (v1+v2;
    #: for sites whose peers are all libtorrent; see vmic/torrents.py)
    torrent_format: str = "v1"
    #: serve HTTPS with this certificate and key (its name: the host of public_url)
    tls_cert: Path | None = None
    #: (see tls_cert)
    tls_key: Path | None = None
    #: accept publishers' TLS client certificates issued by these CAs (file or directory)
    tls_client_ca: Path | None = None
    publishers: tuple[Publisher, ...] = field(default_factory=tuple)
    #: debug, info, warning or error (reloaded on SIGHUP)
    log_level: str = "info"

    def __post_init__(self) -> None:
        if not (0 < self.header_timeout <= 3600 and 0 < self.body_timeout <= 3600):
            raise ConfigError("[catalogue] header_timeout and body_timeout must be more than 0 and at most 3600 s")
        if not 0 < self.upload_expiry <= 365 * 86400:
            raise ConfigError("[catalogue] upload_expiry must be more than 0 and at most a year")
        if self.max_uploads_per_publisher < 1 or self.max_upload_bytes_per_publisher < 1 \
                or self.free_space_reserve < 0:
            raise ConfigError("[catalogue] max_uploads_per_publisher and max_upload_bytes_per_publisher must be "
                              "at least 1, free_space_reserve at least 0")
        if not 4096 <= self.max_partner_list_bytes <= 2**30:
            raise ConfigError("[catalogue] max_partner_list_bytes must be between 4096 and 1073741824")
        if self.host in ("0.0.0.0", "::") and not self.public_url:
            raise ConfigError(f"[catalogue] listen = {self.listen!r} is every address, so the list cannot name "
                              "one for subscribers to reach (hv:uri): set public_url (e.g. https://images.example.org)")

    @property
    def url(self) -> str:
        scheme = "https" if self.tls_cert else "http"
        return (self.public_url or f"{scheme}://{format_listen(self.host, self.port)}").rstrip("/")

    @property
    def tracker_urls(self) -> tuple[str, ...]:
        return tuple(t.strip() for t in self.trackers.split(",") if t.strip())

    @property
    def cert_path(self) -> Path:
        return self.endorser_cert or self.data_dir / "keys" / "endorser.pem"

    @property
    def key_path(self) -> Path:
        return self.endorser_key or self.data_dir / "keys" / "endorser.key"


def publisher_for_subject(publishers: tuple[Publisher, ...], subject: x509.Name) -> Publisher | None:
    """The publisher whose ``client_dn`` is this certificate subject, compared RDN by RDN
    (a value holding "/CN=carol" must not pass for carol)."""
    return next((p for p in publishers if p.client_dn is not None and same_name(subject, p.client_dn)), None)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _publishers(table: Any) -> tuple[Publisher, ...]:
    if not isinstance(table, dict):
        raise ConfigError("[catalogue.publishers] must be a table of tables")
    result = []
    for name, entry in table.items():
        check_name(name, "publisher name")
        if not isinstance(entry, dict) or not (
            isinstance(entry.get("token_sha256"), str) or isinstance(entry.get("client_dn"), str)
        ):
            raise ConfigError(
                f"[catalogue.publishers.{name}] needs token_sha256 (see `vmic token {name}`) or client_dn"
            )
        namespaces = entry.get("namespaces", [name])
        if not isinstance(namespaces, list):
            raise ConfigError(f"[catalogue.publishers.{name}] namespaces must be a list")
        result.append(
            Publisher(
                name=name,
                token_sha256=str(entry.get("token_sha256", "")).lower(),
                namespaces=tuple(check_name(n, "namespace") for n in namespaces),
                admin=entry.get("admin", False) is True,
                client_dn=entry.get("client_dn"),
            )
        )
    return tuple(result)


def load_catalogue_config(path: Path | None = None, env: dict[str, str] | None = None, **overrides: Any) -> CatalogueConfig:
    """Read ``[catalogue]`` from ``path`` (optional), the environment, then ``overrides``."""
    table = dict(read_toml(path).get("catalogue", {}))
    table.update({k: v for k, v in overrides.items() if v is not None})
    publishers = _publishers(table.pop("publishers", {}))
    return load_section(CatalogueConfig, "catalogue", table, env, publishers=publishers)
