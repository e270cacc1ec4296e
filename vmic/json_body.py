"""The JSON body of a request to any vmic API, or a 400 that says why.

aiohttp caps the body's size (``client_max_size``, 1 MiB by default: 413 beyond it);
here: not JSON, JSON's non-standard constants (``NaN``, ``Infinity``) and nesting too
deep for the parser (a 100,000-deep array was a 500) are each a :class:`BadRequest`; a
body that does not arrive within the application's :data:`BODY_TIMEOUT` is a 408.

Slow clients in general: every service's runner closes a connection that has not sent
a whole request within its ``header_timeout`` (aiohttp's keep-alive timeout, which also
runs from the connection's first byte), see :func:`runner_options`.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from .errors import BadRequest, RequestTimeout

#: seconds a request body may take to arrive (an application may set its own)
BODY_TIMEOUT = web.AppKey("body_timeout", float)
DEFAULT_BODY_SECONDS = 60.0
DEFAULT_HEADER_SECONDS = 30.0


def runner_options(header_timeout: float = DEFAULT_HEADER_SECONDS) -> dict[str, Any]:
    """AppRunner settings every vmic service uses: a connection idle, or still sending its
    request's headers, for ``header_timeout`` seconds is closed."""
    return {"keepalive_timeout": header_timeout}


def body_seconds(request: web.Request) -> float:
    return request.config_dict.get(BODY_TIMEOUT, DEFAULT_BODY_SECONDS)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_json(data: bytes | str, what: str = "the request body") -> Any:
    """``data`` as JSON, or :class:`BadRequest` naming ``what`` it is."""
    try:
        return json.loads(data, parse_constant=_no_constant)
    except RecursionError:
        raise BadRequest(f"{what} is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"{what} is not JSON: {exc}") from None


async def json_body(request: web.Request) -> Any:
    seconds = body_seconds(request)
    try:
        async with asyncio.timeout(seconds):
            data = await request.read()
    except TimeoutError:
        raise RequestTimeout(f"the request body did not arrive within {seconds:g} s") from None
    return parse_json(data)
