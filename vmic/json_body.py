"""The JSON body of a request to any vmic API, or a 400 that says why.

aiohttp caps the body's size (``client_max_size``, 1 MiB by default: 413 beyond it);
here: not JSON, JSON's non-standard constants (``NaN``, ``Infinity``) and nesting too
deep for the parser (a 100,000-deep array was a 500) are each a :class:`BadRequest`.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from .errors import BadRequest


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
    return parse_json(await request.read())
