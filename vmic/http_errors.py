"""The JSON error answers of every vmic HTTP service (catalogue, tracker, node API): one
middleware, so that each refusal looks the same everywhere.

    app = web.Application(middlewares=[errors_as_json(log, "catalogue")])

A :class:`~vmic.errors.VmicError` becomes its status and ``{"error": code, "message":
text}``; aiohttp's own HTTP errors (404 of an unknown route, 405, 413) the same shape; any
other exception a 500 that names no detail (the detail goes to the service's log).
Messages echo client input at most :data:`MAX_MESSAGE` characters long (a 1 MB unknown
name is not sent back whole). ``on_answer(request, status)``, if given, sees every answer
(request metrics).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from .errors import Unauthorized, VmicError, truncated

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
OnAnswer = Callable[[web.Request, int], None]


def error_response(error: VmicError) -> web.Response:
    headers = {"WWW-Authenticate": 'Bearer realm="vmic"'} if isinstance(error, Unauthorized) else None
    return web.json_response(error.to_json(), status=error.status, headers=headers)


def errors_as_json(log: logging.Logger, service: str, on_answer: OnAnswer | None = None) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except VmicError as exc:
            response = error_response(exc)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = web.json_response(
                {"error": exc.reason.lower().replace(" ", "_"), "message": truncated(exc.text or exc.reason)},
                status=exc.status, headers={k: v for k, v in exc.headers.items() if k.lower() == "allow"})
        except (asyncio.CancelledError, ConnectionResetError):
            raise
        except Exception:
            log.exception(f"{service}.internal_error", extra={"fields": {"path": truncated(request.path)}})
            response = web.json_response(
                {"error": "internal_error", "message": f"internal error (see the {service} log)"}, status=500)
        if on_answer is not None:
            on_answer(request, response.status)
        return response

    return middleware
