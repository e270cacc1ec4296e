"""What every request handler of the catalogue needs: the catalogue, and who is asking."""

from __future__ import annotations

from aiohttp import web

from ..errors import Forbidden, Unauthorized
from ..imagelist.dn import oneline
from .config import Publisher
from .service import Catalogue
from .tls import client_certificate_subject

CATALOGUE = web.AppKey("catalogue", Catalogue)


def catalogue_of(request: web.Request) -> Catalogue:
    return request.config_dict[CATALOGUE]  # also from a sub-app


def publisher_of(request: web.Request) -> Publisher:
    """The publisher behind the request's bearer token or, without a token, behind the
    TLS client certificate the handshake verified (401 when neither names one)."""
    catalogue = catalogue_of(request)
    header = request.headers.get("Authorization")
    if header is None:
        subject = client_certificate_subject(request)
        if subject is not None:
            publisher = catalogue.publisher_by_certificate(subject)
            if publisher is None:
                raise Unauthorized(f"no publisher has the client certificate subject {oneline(subject)}")
            return publisher
    scheme, _, token = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("this needs a publisher token (Authorization: Bearer <token>) or client certificate")
    publisher = catalogue.publisher(token.strip())
    if publisher is None:
        raise Unauthorized("unknown or revoked publisher token")
    return publisher


def admin_of(request: web.Request) -> Publisher:
    """A publisher with ``admin = true`` (403 for the others)."""
    publisher = publisher_of(request)
    if not publisher.admin:
        raise Forbidden(f"publisher {publisher.name} is not an admin (set admin = true in its config entry)")
    return publisher
