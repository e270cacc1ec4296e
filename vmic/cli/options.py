"""Options every vmic command spells and places the same way."""

from __future__ import annotations

import argparse
from typing import Any


def option_anywhere(parser: argparse.ArgumentParser, sub: argparse._SubParsersAction[argparse.ArgumentParser],
                    *flags: str, **settings: Any) -> None:
    """An option of the command that may come before or after its subcommand (``-c FILE``
    is the same option in every vmic command, wherever it is written)."""
    parser.add_argument(*flags, **settings)
    for subparser in sub.choices.values():  # absent after the subcommand: the value before it stands
        subparser.add_argument(*flags, **{**settings, "default": argparse.SUPPRESS})
