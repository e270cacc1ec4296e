"""Signing with cryptography, checking with the real openssl: both directions."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from support import CA_DN, ENDORSER_DN, VMIC

from vmic.errors import ConfigError, CrlExpired, CrlMissing, EndorserRevoked, SignatureInvalid, UntrustedSigner
from vmic.imagelist.model import Endorser, ImageList
from vmic.imagelist.policy import Subscription
from vmic.imagelist.smime import Signer, verify_smime
from vmic.imagelist.verify import verify_signed_list
from vmic.pki import KeyPaths, init_keys, load_ca, make_crl, make_endorser, subject_hash, write_trust_dir

NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def a_list(version: int = 3) -> ImageList:
    return ImageList(identifier="0b7d0d3e-2f38-4f6e-a1a4-3f4c1a5d2e77", version=version, created=NOW,
                     expires=NOW + dt.timedelta(days=1), endorser=Endorser(ENDORSER_DN, CA_DN), title="t")


def test_plain_openssl_smime_verify_gives_back_the_exact_json(keys: KeyPaths, tmp_path: Path) -> None:
    content = a_list().to_bytes()
    (tmp_path / "list.smime").write_bytes(Signer.load(keys.cert, keys.key).sign(content))
    result = subprocess.run(["openssl", "smime", "-verify", "-CAfile", str(keys.ca_cert),
                             "-in", str(tmp_path / "list.smime")], capture_output=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout == content
    assert b'micalg="sha-512"' in (tmp_path / "list.smime").read_bytes()


async def test_verify_returns_content_and_signer_names(keys: KeyPaths) -> None:
    content = a_list().to_bytes()
    verified = await verify_smime(Signer.load(keys.cert, keys.key).sign(content), [keys.ca_dir])
    assert verified.content == content
    assert (verified.signer_dn, verified.signer_ca) == (ENDORSER_DN, CA_DN)


async def test_tampered_content_is_refused(keys: KeyPaths) -> None:
    message = Signer.load(keys.cert, keys.key).sign(a_list().to_bytes())
    tampered = message.replace(b'"hv:version": "3"', b'"hv:version": "4"')
    assert tampered != message
    with pytest.raises(SignatureInvalid, match="altered"):
        await verify_smime(tampered, [keys.ca_dir])


async def test_unsigned_list_is_refused(keys: KeyPaths) -> None:
    with pytest.raises(SignatureInvalid, match="unsigned"):
        await verify_smime(a_list().to_bytes(), [keys.ca_dir])


async def test_signer_from_an_untrusted_ca_is_refused(keys: KeyPaths, other_keys: KeyPaths) -> None:
    message = Signer.load(other_keys.cert, other_keys.key).sign(a_list().to_bytes())
    with pytest.raises(UntrustedSigner, match="unable to get local issuer certificate"):
        await verify_smime(message, [keys.ca_dir])


async def test_expired_signer_certificate_is_refused(keys: KeyPaths, tmp_path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    ca_cert = x509.load_pem_x509_certificate(keys.ca_cert.read_bytes())
    ca_key = serialization.load_pem_private_key(keys.ca_key.read_bytes(), None)
    cert, key = make_endorser(ENDORSER_DN, ca_cert, ca_key, days=1,  # type: ignore[arg-type]
                              not_before=NOW - dt.timedelta(days=3))
    message = Signer(cert, key).sign(a_list().to_bytes())
    with pytest.raises(UntrustedSigner, match="expired"):
        await verify_smime(message, [keys.ca_dir])


async def test_a_list_signed_by_hand_with_openssl_in_vmcatcher_layout_is_accepted(keys: KeyPaths, tmp_path: Path) -> None:
    """Interop: a list written by hand (numbers as strings, ad:* fields), signed by `openssl smime -sign`."""
    document = {"hv:imagelist": {
        "dc:identifier": "5e1e1bbe-1dd0-4b4c-9c46-0d1b2d0b7c3a", "dc:title": "hand made",
        "dc:date:created": NOW.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "dc:date:expires": (NOW + dt.timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "hv:version": "12", "hv:uri": "https://example.org/list", "ad:vo": "atlas",
        "hv:endorser": {"hv:x509": {"hv:dn": ENDORSER_DN, "hv:ca": CA_DN, "hv:email": "a@b", "dc:creator": "me"}},
        "hv:images": [{"hv:image": {
            "dc:identifier": "11111111-2222-3333-4444-555555555555", "dc:title": "img", "hv:uri": "https://e/x",
            "hv:size": "4096", "sl:checksum:sha512": "c" * 128, "hv:version": "1.2", "ad:mpuri": "x",
            "hv:ram_minimum": "512", "hv:core_minimum": "1"}}],
    }}
    (tmp_path / "list.json").write_text(json.dumps(document, indent=4))
    subprocess.run(["openssl", "smime", "-sign", "-text", "-signer", str(keys.cert), "-inkey", str(keys.key),
                    "-in", str(tmp_path / "list.json"), "-out", str(tmp_path / "list.smime")], check=True)
    image_list = await verify_signed_list((tmp_path / "list.smime").read_bytes(), [keys.ca_dir],
                                          Subscription(endorser_dn=ENDORSER_DN))
    assert image_list.version == 12 and image_list.extra["ad:vo"] == "atlas"
    assert image_list.images[0].size == 4096 and image_list.images[0].extra == {"ad:mpuri": "x"}


def test_unreadable_or_mismatched_key_is_a_one_line_config_error(keys: KeyPaths, other_keys: KeyPaths,
                                                                 tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read signing key .*No such file"):
        Signer.load(keys.cert, tmp_path / "missing.key")
    with pytest.raises(ConfigError, match="does not belong"):
        Signer.load(keys.cert, other_keys.key)
    (tmp_path / "garbage.key").write_text("not a key")
    with pytest.raises(ConfigError, match="not an unencrypted PEM"):
        Signer.load(keys.cert, tmp_path / "garbage.key")


# --- revocation, and the grid layout of trust anchors ----------------------------------------


async def signed_by(directory: Path) -> bytes:
    paths = KeyPaths.under(directory)
    return Signer.load(paths.cert, paths.key).sign(b'{"hello": "world"}')


async def test_a_revoked_endorser_is_refused_and_says_so(tmp_path: Path) -> None:
    init_keys(tmp_path / "site")
    trust = [tmp_path / "site" / "ca"]
    message = await signed_by(tmp_path / "site")
    assert (await verify_smime(message, trust)).content == b'{"hello": "world"}'  # a current, empty CRL
    revoked = subprocess.run([*VMIC, "keys", "revoke", str(tmp_path / "site"), str(tmp_path / "site" / "endorser.pem")],
                             capture_output=True, text=True)
    assert revoked.returncode == 0 and "revoked serial" in revoked.stdout, revoked.stderr
    with pytest.raises(EndorserRevoked):
        await verify_smime(message, trust)
    (tmp_path / "list.smime").write_bytes(message)
    result = subprocess.run([*VMIC, "verify", str(tmp_path / "list.smime"), "--ca", str(trust[0]), "--endorser-dn",
                             ENDORSER_DN], capture_output=True, text=True)
    assert result.returncode == 1 and result.stderr.strip().endswith("(endorser_revoked)")
    assert len(result.stderr.strip().splitlines()) == 1


async def test_an_expired_crl_refuses_every_list_of_its_ca(tmp_path: Path) -> None:
    paths = init_keys(tmp_path / "site")
    ca_cert, ca_key = load_ca(paths)
    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=40)
    write_trust_dir(paths, make_crl(ca_cert, ca_key, [], days=30, now=past))
    with pytest.raises(CrlExpired, match="out of date"):
        await verify_smime(await signed_by(tmp_path / "site"), [paths.ca_dir])


async def test_grid_layout_hash_files_alone_are_a_trust_directory(tmp_path: Path) -> None:
    """``<hash>.0``/``<hash>.r0`` and the policy files of /etc/grid-security/certificates."""
    paths = init_keys(tmp_path / "site")
    grid = tmp_path / "certificates"
    grid.mkdir()
    for file in paths.ca_dir.iterdir():
        if file.name != "ca.pem":
            shutil.copy(file, grid / file.name)
    digest = subject_hash(paths.ca_cert)
    (grid / f"{digest}.signing_policy").write_text("access_id_CA X509 '/C=CH/O=vmic demo/CN=vmic demo CA'\n")
    (grid / f"{digest}.namespaces").write_text("TO Issuer \"/C=CH/O=vmic demo/CN=vmic demo CA\"\n")
    assert sorted(p.name for p in grid.iterdir()) == sorted(
        [f"{digest}.0", f"{digest}.r0", f"{digest}.signing_policy", f"{digest}.namespaces"])
    assert (await verify_smime(await signed_by(tmp_path / "site"), [grid])).content == b'{"hello": "world"}'


async def test_with_crls_a_ca_without_one_is_refused(tmp_path: Path) -> None:
    first = init_keys(tmp_path / "first")
    second = init_keys(tmp_path / "second", ca_dn="/C=CH/O=Other site/CN=Other CA")
    trust = tmp_path / "trust"
    trust.mkdir()
    shutil.copy(first.ca_dir / f"{subject_hash(first.ca_cert)}.0", trust)
    shutil.copy(first.ca_dir / f"{subject_hash(first.ca_cert)}.r0", trust)
    shutil.copy(second.ca_cert, trust / "second.pem")  # a CA without its CRL
    with pytest.raises(CrlMissing):
        await verify_smime(await signed_by(tmp_path / "second"), [trust])
