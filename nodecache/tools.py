"""Running the system's disk tools (qemu-img, lvm) without blocking the event loop.

Every call goes through :func:`run`: ``sh`` in the background, waited for in a thread, the tool's own
``--output=json`` / ``--reportformat json`` parsed by the callers, and a failure turned
into one :class:`~nodecache.errors.NodeCacheError` whose message is the tool's last
line of stderr (what an operator needs to read).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import sh

from .errors import NodeCacheError, StageFailed


async def run(program: str, *args: str, error: type[NodeCacheError] = StageFailed,
              env: dict[str, str] | None = None) -> str:
    """``program args`` through sh, its stdout; a failure is ``error`` with its last stderr line.

    Not sh's ``_async``: that mode learns of the end through its output thread, which, when
    the output closes before the process is reaped, waits a whole second before it looks
    again (sh 2.4, ``output_thread``): measured, one call in three or so took 1.006 s instead
    of 6 ms. A background command waited for in a thread (``waitpid``) ends when it ends."""
    try:
        command = sh.Command(program)
    except sh.CommandNotFound:
        raise error(f"{program} is not installed") from None
    kwargs: dict[str, Any] = {"_bg": True, "_bg_exc": False}
    if env is not None:
        kwargs["_env"] = env
    running = command(*args, **kwargs)
    try:
        await asyncio.to_thread(running.wait)
    except asyncio.CancelledError:  # e.g. a conversion whose sha512 pass failed: stop the tool too
        with contextlib.suppress(Exception):
            running.kill()
        with contextlib.suppress(Exception):
            await asyncio.shield(asyncio.to_thread(running.wait))
        raise
    except sh.ErrorReturnCode as exc:
        lines = [line for line in exc.stderr.decode(errors="replace").splitlines()
                 if line.strip() and "WARNING" not in line]
        reason = lines[-1].strip() if lines else f"exit code {exc.exit_code}"
        raise error(f"{program} {args[0] if args else ''}: {reason}") from None
    return str(running)


async def run_json(program: str, *args: str, error: type[NodeCacheError] = StageFailed,
                   env: dict[str, str] | None = None) -> Any:
    output = await run(program, *args, error=error, env=env)
    try:
        return json.loads(output)
    except json.JSONDecodeError:
        raise error(f"{program} {args[0] if args else ''}: output is not JSON") from None
