"""What names may be. Every name that reaches a path or a URL goes through here.

Names are short, start with a letter or digit, and use only ``A-Z a-z 0-9 . _ -``;
``..`` is never allowed, so no name can climb out of a folder.
"""

from __future__ import annotations

import re
import uuid

from ..errors import BadRequest

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  #: fullmatch only: "$" allows a final newline


def check_name(value: object, what: str) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value) or ".." in value:
        raise BadRequest(
            f"invalid {what} {value!r}: use 1-128 of A-Z a-z 0-9 . _ -, starting with a letter or digit, no '..'"
        )
    return value


def check_identifier(value: object, what: str = "image identifier") -> str:
    """Image identifiers and upload ids are UUIDs, written in canonical lower-case form."""
    try:
        parsed = uuid.UUID(str(value))
    except ValueError:
        raise BadRequest(f"invalid {what} {value!r}: must be a UUID") from None
    if str(parsed) != value:  # one spelling only: an upper-case twin would name another part file
        raise BadRequest(f"invalid {what} {str(value)[:80]!r}: write the UUID as {parsed}")
    return str(parsed)


def check_sha512(value: object) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-fA-F]{128}", value):
        raise BadRequest("sha512 must be 128 hexadecimal digits")
    return value.lower()
