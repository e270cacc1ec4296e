"""HTTPS for the catalogue, and publishers who authenticate with TLS client certificates."""

from __future__ import annotations

import ssl
import tempfile

from aiohttp import web
from cryptography import x509

from ..errors import ConfigError
from ..imagelist.smime import ca_bundle
from .config import CatalogueConfig


def server_context(config: CatalogueConfig) -> ssl.SSLContext | None:
    """None for plain HTTP; else a context that asks for (but does not demand) client
    certificates when ``tls_client_ca`` is set: token publishers need none."""
    if config.tls_cert is None:
        if config.tls_client_ca is not None:
            raise ConfigError("tls_client_ca needs tls_cert and tls_key (client certificates need HTTPS)")
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(config.tls_cert, config.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load TLS certificate {config.tls_cert} / key {config.tls_key}: {exc}") from None
    if config.tls_client_ca is not None:
        with tempfile.NamedTemporaryFile(suffix=".pem") as bundle:
            bundle.write(ca_bundle([config.tls_client_ca]))
            bundle.flush()
            context.load_verify_locations(bundle.name)
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


def client_certificate_subject(request: web.Request) -> x509.Name | None:
    """Subject of the client certificate the TLS handshake verified, if any."""
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der).subject if der else None
