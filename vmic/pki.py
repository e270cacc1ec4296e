"""A small certificate authority for demos and tests (``vmic keys init``).

Production sites use certificates from their grid CA; this makes a self-signed CA
and an endorser certificate signed by it, as PEM files::

    <dir>/ca/ca.pem            trusted CA (give this directory to subscribers)
    <dir>/ca/ca.key
    <dir>/endorser.pem         the catalogue's signing certificate
    <dir>/endorser.key         its key (mode 0600)
"""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from .errors import ConfigError
from .imagelist.dn import parse_oneline


@dataclass(frozen=True)
class KeyPaths:
    ca_dir: Path
    ca_cert: Path
    ca_key: Path
    cert: Path
    key: Path

    @classmethod
    def under(cls, directory: Path) -> KeyPaths:
        """``ca/`` is the trust directory subscribers get (grid layout: ``<hash>.0`` the CA
        certificate, ``<hash>.r0`` its CRL, and ``ca.pem``); the CA's key is kept apart."""
        directory = Path(directory)
        return cls(
            ca_dir=directory / "ca",
            ca_cert=directory / "ca" / "ca.pem",
            ca_key=directory / "ca-private" / "ca.key",
            cert=directory / "endorser.pem",
            key=directory / "endorser.key",
        )


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def make_ca(subject: str, days: int = 3650) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP384R1())
    name = parse_oneline(subject)
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA384())
    )
    return cert, key


def make_endorser(
    subject: str,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    days: int = 825,
    not_before: dt.datetime | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    start = not_before or dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
    cert = (
        x509.CertificateBuilder()
        .subject_name(parse_oneline(subject))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, True, False, False, False, False, False, False, False), critical=True
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def issue_tls_certificate(
    subject: str,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    *,
    server_names: tuple[str, ...] = (),
    days: int = 825,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A TLS certificate: for a server when ``server_names`` (host names or IPs) are
    given, else for a client (a publisher authenticating with its certificate)."""
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server_names else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(parse_oneline(subject))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if server_names:
        names: list[x509.GeneralName] = []
        for name in server_names:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                names.append(x509.DNSName(name))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def write_pair(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey, cert_path: Path, key_path: Path) -> None:
    _write_key(key_path, key)
    _write_cert(cert_path, cert)


def load_ca(paths: KeyPaths) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
    key = serialization.load_pem_private_key(paths.ca_key.read_bytes(), None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{paths.ca_key}: the CA key is not an EC key (vmic keys init makes EC keys)")
    return cert, key


def subject_hash(cert_path: Path) -> str:
    """OpenSSL's subject hash of a certificate: the ``<hash>`` of the grid layout."""
    result = subprocess.run(["openssl", "x509", "-noout", "-subject_hash", "-in", str(cert_path)],
                            capture_output=True, text=True)
    if result.returncode != 0 or not re.fullmatch(r"[0-9a-f]{8}", result.stdout.strip()):
        raise ConfigError(f"openssl cannot read {cert_path}: {result.stderr.strip()[:200]}")
    return result.stdout.strip()


def make_crl(ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, revoked: list[int],
             days: float = 30, now: dt.datetime | None = None) -> x509.CertificateRevocationList:
    """The CA's CRL naming the serial numbers ``revoked``, valid ``days`` from ``now``."""
    now = now or dt.datetime.now(dt.timezone.utc)
    builder = (x509.CertificateRevocationListBuilder().issuer_name(ca_cert.subject).last_update(now)
               .next_update(now + dt.timedelta(days=days)))
    for serial in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build())
    return builder.sign(ca_key, hashes.SHA256())


def write_trust_dir(paths: KeyPaths, crl: x509.CertificateRevocationList) -> None:
    """``<hash>.0`` (the CA certificate) and ``<hash>.r0`` (its CRL) beside ``ca.pem``, as
    in ``/etc/grid-security/certificates``; each file replaced atomically."""
    digest = subject_hash(paths.ca_cert)
    for name, data in ((f"{digest}.0", paths.ca_cert.read_bytes()),
                       (f"{digest}.r0", crl.public_bytes(serialization.Encoding.PEM))):
        temporary = paths.ca_dir / f".{name}.new"
        temporary.write_bytes(data)
        os.replace(temporary, paths.ca_dir / name)


def crl_path(paths: KeyPaths) -> Path:
    return paths.ca_dir / f"{subject_hash(paths.ca_cert)}.r0"


def revoke(directory: Path, cert_path: Path, days: float = 30) -> int:
    """Add the certificate at ``cert_path`` (issued by the CA under ``directory``) to the
    CA's CRL and sign it again; its serial number."""
    paths = KeyPaths.under(directory)
    ca_cert, ca_key = load_ca(paths)
    try:
        cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read certificate {cert_path}: {exc}") from None
    if cert.issuer != ca_cert.subject:
        raise ConfigError(f"{cert_path} was not issued by the CA in {paths.ca_dir}")
    revoked = []
    current = crl_path(paths)
    if current.is_file():
        revoked = [r.serial_number for r in x509.load_pem_x509_crl(current.read_bytes())]
    if cert.serial_number not in revoked:
        revoked.append(cert.serial_number)
    write_trust_dir(paths, make_crl(ca_cert, ca_key, revoked, days))
    return cert.serial_number


def init_keys(
    directory: Path,
    endorser_dn: str = "/C=CH/O=vmic demo/CN=vmic catalogue endorser",
    ca_dn: str = "/C=CH/O=vmic demo/CN=vmic demo CA",
) -> KeyPaths:
    """Create a CA and an endorser certificate under ``directory`` (kept if present)."""
    paths = KeyPaths.under(directory)
    if paths.ca_cert.exists() and paths.ca_key.exists():
        ca_cert, ca_key = load_ca(paths)
    else:
        ca_cert, ca_key = make_ca(ca_dn)
        paths.ca_key.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write_key(paths.ca_key, ca_key)
        _write_cert(paths.ca_cert, ca_cert)
        write_trust_dir(paths, make_crl(ca_cert, ca_key, []))
    if not (paths.cert.exists() and paths.key.exists()):
        cert, key = make_endorser(endorser_dn, ca_cert, ca_key)
        write_pair(cert, key, paths.cert, paths.key)
    return paths
