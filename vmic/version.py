"""The installed version, for every command's ``--version`` (cheap: no heavy import)."""

from __future__ import annotations

import argparse
from importlib.metadata import PackageNotFoundError, version


def installed_version() -> str:
    try:
        return version("vmic")
    except PackageNotFoundError:
        return "unknown (not installed)"


def add_version(parser: argparse.ArgumentParser, prog: str) -> None:
    """``--version`` on a command's parser: ``PROG VERSION``."""
    parser.add_argument("--version", action="version", version=f"{prog} {installed_version()}")

