"""Structured logs: one JSON object a line on stderr, for every daemon.

Use the standard :mod:`logging` API and pass fields as ``extra={"fields": {...}}``,
or the :func:`event` helper::

    event(log, "upload.complete", upload=upload_id, bytes=size)
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import Any


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        line.update(getattr(record, "fields", {}))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


LEVELS = ("debug", "info", "warning", "error", "critical")


def setup(level: str = "info") -> None:
    """JSON logs on stderr at ``level`` (a wrong name is a one-line configuration error)."""
    if not isinstance(level, str) or level.lower() not in LEVELS:
        from .errors import ConfigError

        raise ConfigError(f"log_level must be one of {', '.join(LEVELS)}, not {level!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("sh").setLevel(logging.WARNING)  # each qemu-img/lvm call: our own events say what matters


def event(logger: logging.Logger, message: str, /, *, level: int = logging.INFO, **fields: Any) -> None:
    logger.log(level, message, extra={"fields": fields})
