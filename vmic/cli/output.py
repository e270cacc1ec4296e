"""Terminal output shared by the vmic commands (rich)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

from ..catalogue.page import human_size
from ..errors import ConfigError, VmicError

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table


def console(stream: TextIO) -> Console:
    """A console; into a pipe or file it is wide enough that no identifier is cut."""
    from rich.console import Console

    return Console(file=stream, highlight=False, soft_wrap=True, width=None if stream.isatty() else 200)


def images_table(images: list[dict[str, Any]]) -> Table:
    from rich.table import Table

    table = Table("image", "version", "size", "format", "os", "identifier", "state")
    for image in images:
        name = "/".join(filter(None, (image.get("namespace"), image.get("name"))))
        table.add_row(
            name, str(image["version"]), human_size(int(image["size"])), image.get("format", ""),
            image.get("os", ""), image["identifier"], "revoked" if image.get("revoked") else "current",
        )
    return table


def run_command(prog: str, command: Callable[[], int]) -> int:
    """Run a command; any failure is one line on stderr and an exit code: 2 for bad usage
    or configuration, 1 for a refused operation or a system error, 130 when interrupted."""
    try:
        return command()
    except ConfigError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except VmicError as exc:
        print(f"{prog}: error: {exc} ({exc.code})", file=sys.stderr)
        return 1
    except OSError as exc:  # e.g. the port to listen on is taken
        print(f"{prog}: error: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
