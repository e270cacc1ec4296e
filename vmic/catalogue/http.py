"""What every request handler of the catalogue needs: the catalogue, and who is asking."""

from __future__ import annotations

from aiohttp import web

from ..errors import Forbidden, Unauthorized
from .config import Publisher
from .service import Catalogue

CATALOGUE = web.AppKey("catalogue", Catalogue)


def catalogue_of(request: web.Request) -> Catalogue:
    return request.app[CATALOGUE]


def publisher_of(request: web.Request) -> Publisher:
    """The publisher whose bearer token the request carries (401 without a valid one)."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("this needs a publisher token: Authorization: Bearer <token>")
    publisher = catalogue_of(request).publisher(token.strip())
    if publisher is None:
        raise Unauthorized("unknown or revoked publisher token")
    return publisher


def admin_of(request: web.Request) -> Publisher:
    """A publisher with ``admin = true`` (403 for the others)."""
    publisher = publisher_of(request)
    if not publisher.admin:
        raise Forbidden(f"publisher {publisher.name} is not an admin (set admin = true in its config entry)")
    return publisher
