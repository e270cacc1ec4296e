"""Terminal output shared by the vmic commands (rich)."""

from __future__ import annotations

from typing import Any, TextIO

from rich.console import Console
from rich.table import Table

from ..catalogue.page import human_size


def console(stream: TextIO) -> Console:
    """A console; into a pipe or file it is wide enough that no identifier is cut."""
    return Console(file=stream, highlight=False, soft_wrap=True, width=None if stream.isatty() else 200)


def images_table(images: list[dict[str, Any]]) -> Table:
    table = Table("image", "version", "size", "format", "os", "identifier", "state")
    for image in images:
        name = "/".join(filter(None, (image.get("namespace"), image.get("name"))))
        table.add_row(
            name, str(image["version"]), human_size(int(image["size"])), image.get("format", ""),
            image.get("os", ""), image["identifier"], "revoked" if image.get("revoked") else "current",
        )
    return table
