"""Baseline for imagelist.py: an aiohttp server answering every GET with one constant body.

    python constant_server.py BODY_FILE PORT
"""

from __future__ import annotations

import sys
from pathlib import Path

from aiohttp import web


def main() -> None:
    body, port = Path(sys.argv[1]).read_bytes(), int(sys.argv[2])

    async def constant(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="text/plain")

    app = web.Application()
    app.router.add_get("/imagelist", constant)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main()
