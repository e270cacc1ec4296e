"""What every command that talks to a catalogue shares: its URL, and how to authenticate."""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..client import CatalogueClient

DEFAULT_URL = "http://127.0.0.1:8470"


def url_of(args: argparse.Namespace) -> str:
    return args.url or os.environ.get("VMIC_URL") or DEFAULT_URL


def client_for(args: argparse.Namespace, token: bool = True) -> CatalogueClient:
    """A client of the catalogue at --url, authenticated as the command needs: by
    --token ($VMIC_TOKEN) or by a TLS client certificate (--cert/--key)."""
    from ..client import CatalogueClient, tls_context

    tls_ca = args.tls_ca or _env_path("VMIC_TLS_CA") or _env_path("VMIC_CACERT")
    cert = args.cert or _env_path("VMIC_CERT")
    key = args.key or _env_path("VMIC_KEY")
    secret = (args.token or os.environ.get("VMIC_TOKEN")) if token else None
    if token and not secret and cert is None:
        raise ConfigError("no publisher token: pass --token or set VMIC_TOKEN (or use a client certificate: --cert)")
    return CatalogueClient(url_of(args), secret, ssl_context=tls_context(tls_ca, cert, key))


T = TypeVar("T")


def call(args: argparse.Namespace, action: Callable[[CatalogueClient], Awaitable[T]], token: bool = True) -> T:
    """Run ``action`` with a client of the catalogue at --url: ``call(args, lambda c: c.images())``."""

    async def run() -> T:
        async with client_for(args, token) as client:
            return await action(client)

    return asyncio.run(run())


def _env_path(name: str) -> Path | None:
    return Path(os.environ[name]) if os.environ.get(name) else None


def remote(parser_: argparse.ArgumentParser, token: bool) -> None:
    """--url, --tls-ca, --cert, --key (and --token where the command changes something)."""
    parser_.add_argument("--url", help=f"catalogue URL (default: $VMIC_URL or {DEFAULT_URL})")
    parser_.add_argument("--tls-ca", "--cacert", dest="tls_ca", type=Path,
                         help="CA of an HTTPS catalogue's certificate, trusted besides the system's (default: $VMIC_TLS_CA)")
    parser_.add_argument("--cert", type=Path, help="TLS client certificate (default: $VMIC_CERT)")
    parser_.add_argument("--key", type=Path, help="its key (default: $VMIC_KEY)")
    parser_.add_argument("--token", help="publisher token (default: $VMIC_TOKEN)" if token else argparse.SUPPRESS)
