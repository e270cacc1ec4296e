"""HTTPS, and publishers who authenticate with a TLS client certificate instead of a token."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import VMIC, RunningCatalogue, make_config, upload_request, write_image

from vmic.catalogue.config import Publisher
from vmic.catalogue.service import open_catalogue
from vmic.client import CatalogueClient, ConnectionFailed, tls_context
from vmic.errors import ConfigError, RemoteError
from vmic.pki import KeyPaths, issue_tls_certificate, load_ca, write_pair

CAROL_DN = "/C=CH/O=vmic test/CN=carol"


@dataclass(frozen=True)
class TlsFiles:
    server_cert: Path
    server_key: Path
    carol_cert: Path
    carol_key: Path
    stranger_cert: Path  # valid CA, but no publisher has its subject
    stranger_key: Path
    evil_cert: Path  # from a CA the catalogue does not trust
    evil_key: Path


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory, keys: KeyPaths, other_keys: KeyPaths) -> TlsFiles:
    base = tmp_path_factory.mktemp("tls")
    ca, evil_ca = load_ca(keys), load_ca(other_keys)
    made = {
        "server": issue_tls_certificate("/CN=catalogue", *ca, server_names=("127.0.0.1", "localhost")),
        "carol": issue_tls_certificate(CAROL_DN, *ca),
        "stranger": issue_tls_certificate("/C=CH/O=vmic test/CN=stranger", *ca),
        "evil": issue_tls_certificate(CAROL_DN, *evil_ca),
    }
    for name, (cert, key) in made.items():
        write_pair(cert, key, base / f"{name}.pem", base / f"{name}.key")
    return TlsFiles(*(base / f"{n}.{ext}" for n in made for ext in ("pem", "key")))


@pytest.fixture
async def https_catalogue(catalogue_factory, keys: KeyPaths, tls: TlsFiles) -> RunningCatalogue:  # type: ignore[no-untyped-def]
    base = make_config(Path("/unused"), keys)
    publishers = (*base.publishers, Publisher("carol", "", ("carol",), client_dn=CAROL_DN))
    return await catalogue_factory(tls_cert=tls.server_cert, tls_key=tls.server_key, tls_client_ca=keys.ca_cert,
                                   publishers=publishers)


def client(catalogue: RunningCatalogue, keys: KeyPaths, cert: Path | None = None, key: Path | None = None,
           token: str | None = None) -> CatalogueClient:
    return CatalogueClient(catalogue.url, token, ssl_context=tls_context(keys.ca_cert, cert, key))


async def test_publisher_authenticates_with_a_client_certificate(https_catalogue: RunningCatalogue, keys: KeyPaths,
                                                                 tls: TlsFiles, tmp_path: Path) -> None:
    assert https_catalogue.url.startswith("https://")
    image_file = write_image(tmp_path / "a.raw", 2**20)
    async with client(https_catalogue, keys, tls.carol_cert, tls.carol_key) as carol:
        record = await carol.upload(image_file, upload_request(image_file, namespace="carol"))
        with pytest.raises(RemoteError) as caught:  # the certificate names carol, not alice
            await carol.upload(image_file, upload_request(image_file, namespace="alice"))
    assert record["publisher"] == "carol" and caught.value.status == 403


async def test_tokens_still_work_and_reading_needs_no_certificate(https_catalogue: RunningCatalogue, keys: KeyPaths,
                                                                  tmp_path: Path) -> None:
    image_file = write_image(tmp_path / "a.raw", 4096)
    async with client(https_catalogue, keys, token="alice-secret-token") as alice:
        assert (await alice.upload(image_file, upload_request(image_file)))["publisher"] == "alice"
    async with client(https_catalogue, keys) as anonymous:
        assert b"hv:imagelist" in (await anonymous.fetch("/imagelist.json")).body
        with pytest.raises(RemoteError) as caught:
            await anonymous.revoke("2f6b6a52-8d4f-4f57-9c1e-3d1c0b0f8a61")
    assert caught.value.status == 401


async def test_unknown_or_untrusted_certificates_are_refused(https_catalogue: RunningCatalogue, keys: KeyPaths,
                                                             tls: TlsFiles, tmp_path: Path) -> None:
    image_file = write_image(tmp_path / "a.raw", 4096)
    async with client(https_catalogue, keys, tls.stranger_cert, tls.stranger_key) as stranger:
        with pytest.raises(RemoteError, match="no publisher has the client certificate subject") as caught:
            await stranger.upload(image_file, upload_request(image_file, namespace="carol"))
    assert caught.value.status == 401
    async with client(https_catalogue, keys, tls.evil_cert, tls.evil_key) as evil:  # carol's DN, other CA
        with pytest.raises(ConnectionFailed):
            await evil.upload(image_file, upload_request(image_file, namespace="carol"))
    assert await https_catalogue.catalogue.store.images() == []


async def test_cli_publishes_with_a_certificate(https_catalogue: RunningCatalogue, keys: KeyPaths, tls: TlsFiles,
                                                tmp_path: Path) -> None:
    image_file = write_image(tmp_path / "a.raw", 2**20)
    env = {k: v for k, v in os.environ.items() if k != "VMIC_TOKEN"} | {"XDG_CACHE_HOME": str(tmp_path)}
    proc = await asyncio.create_subprocess_exec(
        *VMIC, "publish", str(image_file), "--url", https_catalogue.url, "--tls-ca", str(keys.ca_cert),
        "--cert", str(tls.carol_cert), "--key", str(tls.carol_key), "--namespace", "carol", "--name", "img",
        "--version", "1", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err
    assert b"published carol/img version 1" in out


async def test_client_ca_without_https_is_a_config_error(keys: KeyPaths, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs tls_cert"):
        await open_catalogue(make_config(tmp_path, keys, tls_client_ca=keys.ca_cert))
