"""The installed version, for every command's ``--version`` (cheap: no heavy import)."""

from __future__ import annotations

import argparse
from importlib.metadata import PackageNotFoundError, version
from typing import Any


def installed_version() -> str:
    try:
        return version("vmic")
    except PackageNotFoundError:
        return "unknown (not installed)"


def add_version(parser: argparse.ArgumentParser, prog: str) -> None:
    """``--version`` on a command's parser: ``PROG VERSION``."""
    parser.add_argument("--version", action="version", version=f"{prog} {installed_version()}")


def option_anywhere(parser: argparse.ArgumentParser, sub: argparse._SubParsersAction[argparse.ArgumentParser],
                    *flags: str, **settings: Any) -> None:
    """An option of the command that may come before or after its subcommand (``-c FILE``
    is the same option in every vmic command, wherever it is written)."""
    parser.add_argument(*flags, **settings)
    for subparser in sub.choices.values():  # absent after the subcommand: the value before it stands
        subparser.add_argument(*flags, **{**settings, "default": argparse.SUPPRESS})
