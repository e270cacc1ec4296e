"""Sign an image list as detached S/MIME, and check such a signature.

Signing uses ``cryptography`` (PKCS#7, ``multipart/signed``, SHA-512). ``cryptography``
has no public API to *verify* PKCS#7, so checking runs ``openssl cms -verify`` in a
subprocess, the same check that ``openssl smime -verify`` does for a person, and
reads the signer certificate it returns. Deciding whether the signer is the right
endorser is policy (:mod:`.policy`), not done here.
"""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs7

from ..errors import ConfigError, CrlExpired, CrlMissing, EndorserRevoked, SignatureInvalid, UntrustedSigner
from .dn import oneline


@dataclass(frozen=True)
class Signer:
    """A certificate and private key that sign lists."""

    certificate: x509.Certificate
    key: pkcs7.PKCS7PrivateKeyTypes

    @property
    def dn(self) -> str:
        return oneline(self.certificate.subject)

    @property
    def ca(self) -> str:
        return oneline(self.certificate.issuer)

    @classmethod
    def load(cls, cert_path: Path, key_path: Path) -> Signer:
        """Read PEM files; any problem is a one-line :class:`ConfigError`."""
        try:
            cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
        except OSError as exc:
            raise ConfigError(f"cannot read endorser certificate {cert_path}: {exc.strerror}") from None
        except ValueError:
            raise ConfigError(f"endorser certificate {cert_path} is not a PEM certificate") from None
        try:
            key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
        except OSError as exc:
            raise ConfigError(f"cannot read signing key {key_path}: {exc.strerror}") from None
        except (ValueError, TypeError):
            raise ConfigError(f"signing key {key_path} is not an unencrypted PEM private key") from None
        if key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ) != cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ):
            raise ConfigError(f"signing key {key_path} does not belong to certificate {cert_path}")
        if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
            raise ConfigError(f"signing key {key_path} is neither an RSA nor an EC key (S/MIME signs with those)")
        return cls(certificate=cert, key=key)

    def sign(self, content: bytes) -> bytes:
        """A detached ``multipart/signed`` S/MIME message over ``content``."""
        return (
            pkcs7.PKCS7SignatureBuilder()
            .set_data(content)
            .add_signer(self.certificate, self.key, hashes.SHA512())
            .sign(serialization.Encoding.SMIME, [pkcs7.PKCS7Options.DetachedSignature])
        )


@dataclass(frozen=True)
class VerifiedMessage:
    """What a good signature vouches for: the content and who signed it."""

    content: bytes
    signer: x509.Name  #: the signing certificate's subject (compare with dn.same_name)
    issuer: x509.Name  #: and its issuer

    @property
    def signer_dn(self) -> str:
        return oneline(self.signer)

    @property
    def signer_ca(self) -> str:
        return oneline(self.issuer)


def _classify(stderr: str) -> Exception:
    """Turn openssl's complaint into the one error that says why."""
    text = stderr.lower()
    line = next((row for row in stderr.splitlines() if "error" in row.lower()), stderr.strip()[:200])
    if any(m in text for m in ("content verify error", "digest failure", "signature failure", "verify_content")):
        return SignatureInvalid("signature does not match the content (the list was altered)")
    if "certificate revoked" in text:
        return EndorserRevoked("the signer's certificate is revoked by its CA (CRL)")
    if "crl has expired" in text or "crl is not yet valid" in text:
        return CrlExpired("the CRL of the signer's CA is out of date: refused until a current CRL is installed")
    if "unable to get certificate crl" in text:
        return CrlMissing("the trust directory holds CRLs, but none of the signer's CA: install it")
    if "verify error:" in text:
        detail = stderr[text.index("verify error:") + len("verify error:"):].splitlines()[0].strip()
        return UntrustedSigner(f"signer certificate does not chain to a trusted CA: {detail}")
    return SignatureInvalid(f"not a valid signed S/MIME message: {line}")


def _strip_text_headers(content: bytes) -> bytes:
    """``openssl smime -sign -text`` signs a MIME part (``Content-Type: text/plain``
    headers, a blank line, then the JSON); give back just the JSON."""
    if content[:13].lower() == b"content-type:":
        for separator in (b"\r\n\r\n", b"\n\n"):
            head, sep, body = content.partition(separator)
            if sep:
                return body
    return content


#: trust files in a CA directory: ``*.pem``/``*.crt`` certificates, the grid layout of
#: ``/etc/grid-security/certificates`` (``<hash>.N`` certificates, ``<hash>.rN`` CRLs;
#: ``.signing_policy``, ``.namespaces``, ``.info`` are ignored), and ``*.crl``
TRUST_FILE = re.compile(r".+\.(pem|crt|crl)|[0-9a-f]{8}\.r?[0-9]+")
PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----.+?-----END \1-----", re.S)


def ca_bundle(ca_paths: list[Path]) -> bytes:
    """Every PEM certificate and CRL from CA files and directories, joined (what
    :func:`verify_smime` takes as trust; partner subscriptions store it)."""
    pems: list[bytes] = []
    for path in ca_paths:
        path = Path(path)
        files = sorted(p for p in path.iterdir() if TRUST_FILE.fullmatch(p.name)) if path.is_dir() else [path]
        for file in files:
            try:
                pems.append(file.read_bytes())
            except OSError as exc:
                raise ConfigError(f"cannot read CA file {file}: {exc.strerror}") from None
    bundle = b"\n".join(pems)
    if b"BEGIN CERTIFICATE" not in bundle:
        raise ConfigError(f"no CA certificates (*.pem, *.crt, <hash>.0) in {', '.join(map(str, ca_paths))}")
    return bundle


def split_trust(bundle: bytes) -> tuple[bytes, bytes]:
    """(certificates, CRLs) of a PEM bundle, each as PEM."""
    certificates, crls = [], []
    for block in PEM_BLOCK.finditer(bundle):
        if block.group(1) in (b"CERTIFICATE", b"TRUSTED CERTIFICATE"):
            certificates.append(block.group(0))
        elif block.group(1) == b"X509 CRL":
            crls.append(block.group(0))
    return b"\n".join(certificates) + b"\n", b"\n".join(crls) + (b"\n" if crls else b"")


async def verify_smime(message: bytes, trusted: bytes | list[Path], *, openssl: str = "openssl") -> VerifiedMessage:
    """Check an S/MIME signed message with ``openssl cms -verify`` against trusted CAs
    (PEM bytes, or CA files and directories).

    Raises :class:`SignatureInvalid` (unsigned, altered) or :class:`UntrustedSigner`.
    """
    if b"multipart/signed" not in message[:4096] and b"pkcs7-mime" not in message[:4096]:
        raise SignatureInvalid("not a signed S/MIME message (no multipart/signed header): an unsigned list")
    certificates, crls = split_trust(trusted if isinstance(trusted, bytes) else ca_bundle(trusted))
    with tempfile.TemporaryDirectory(prefix="vmic-verify-") as tmp:
        ca_file, msg_file = os.path.join(tmp, "ca.pem"), os.path.join(tmp, "msg.smime")
        out_file, signer_file = os.path.join(tmp, "content"), os.path.join(tmp, "signer.pem")
        Path(ca_file).write_bytes(certificates + crls)  # openssl reads CRLs from the CA file too
        Path(msg_file).write_bytes(message)
        # with CRLs, the signer's CA must have a current one (grid practice)
        revocation = ["-crl_check"] if crls else []
        proc = await asyncio.create_subprocess_exec(
            openssl, "cms", "-verify", "-inform", "SMIME", "-in", msg_file, "-CAfile", ca_file, *revocation,
            "-purpose", "any", "-out", out_file, "-signer", signer_file,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        _, stderr = await proc.communicate()
        if proc.returncode != 0:
            raise _classify(stderr.decode(errors="replace"))
        signers = x509.load_pem_x509_certificates(Path(signer_file).read_bytes())
        if len(signers) != 1:
            raise SignatureInvalid(f"expected exactly one signer, found {len(signers)}")
        return VerifiedMessage(
            content=_strip_text_headers(Path(out_file).read_bytes()),
            signer=signers[0].subject,
            issuer=signers[0].issuer,
        )

