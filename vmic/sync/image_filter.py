"""Which of a partner's images to mirror: ``KEY=VALUE`` selectors, all of which must hold.

Keys are the image's HEPiX fields (``sl:os``, ``hv:format``, ...) or their short names
(``os``, ``format``, ``arch``, ``title``, ...), or extension fields (``ad:vo``).
No selector selects everything. Pure: no I/O.
"""

from __future__ import annotations

from ..errors import BadRequest
from ..imagelist.model import IMAGE_FIELDS, Image

_SHORT = {key: attr for attr, (key, _) in IMAGE_FIELDS.items()}


def parse_selectors(items: list[str] | dict[str, str]) -> dict[str, str]:
    pairs = items.items() if isinstance(items, dict) else (i.partition("=")[::2] for i in items)
    result: dict[str, str] = {}
    for key, value in pairs:
        if not key or not isinstance(value, str):
            raise BadRequest(f"selector {key!r} must be KEY=VALUE")
        result[_SHORT.get(key, key)] = value
    return result


def selected(image: Image, selectors: dict[str, str]) -> bool:
    for key, want in selectors.items():
        have = getattr(image, key) if key in IMAGE_FIELDS else image.extra.get(key)
        if have is None or str(have) != want:
            return False
    return True
