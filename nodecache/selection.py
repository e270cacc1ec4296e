"""Which images of the followed lists this node pre-stages: pure, no I/O.

An image's *name* is ``vmic:namespace/vmic:name`` where the catalogue gives them, else
its title; versions of one name are ordered by ``hv:version`` compared as numbers
where they are numbers ("10" after "9"), then by creation date.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from vmic.imagelist.extensions import NAME, NAMESPACE, TAGS
from vmic.imagelist.model import EXT_CREATED, EXT_PUBLISHER, Image

from .config import Selection


def image_name(image: Image) -> str:
    namespace, name = image.extra.get(NAMESPACE), image.extra.get(NAME)
    if namespace and name:
        return f"{namespace}/{name}"
    return image.title or image.identifier


def version_key(image: Image) -> tuple[tuple[tuple[int, str], ...], str]:
    parts = tuple((int(p), "") if p.isdigit() else (-1, p) for p in re.split(r"[.\-_+]", image.version))
    return parts, str(image.extra.get(EXT_CREATED, ""))


def _tags(image: Image) -> set[str]:
    words = set(re.findall(r"[\w.-]+", f"{image.title} {image.description}".lower()))
    tags = image.extra.get(TAGS, [])
    words |= {str(t).lower() for t in (tags if isinstance(tags, list) else str(tags).split(","))}
    return words


def matches(image: Image, selection: Selection) -> bool:
    def one_of(value: str, allowed: tuple[str, ...]) -> bool:
        return not allowed or value.lower() in {a.lower() for a in allowed}

    return (
        one_of(image.os, selection.os)
        and one_of(image.arch, selection.arch)
        and one_of(str(image.extra.get(EXT_PUBLISHER, "")), selection.publishers)
        and (not selection.names or image_name(image) in selection.names or image.title in selection.names)
        and (not selection.tags or bool(_tags(image) & {t.lower() for t in selection.tags}))
    )


def select(images: Iterable[Image], selection: Selection) -> list[Image]:
    """The images to pre-stage, newest first within each name."""
    if selection.none:
        return []
    by_name: dict[str, list[Image]] = {}
    for image in images:
        if matches(image, selection):
            by_name.setdefault(image_name(image), []).append(image)
    chosen: list[Image] = []
    for versions in by_name.values():
        versions.sort(key=version_key, reverse=True)
        chosen.extend(versions[: selection.latest] if selection.latest else versions)
    return chosen


def resolve(images: Iterable[Image], wanted: str) -> Image | None:
    """An image by identifier, or the newest version of a name or title."""
    candidates = []
    for image in images:
        if image.identifier == wanted:
            return image
        if wanted in (image_name(image), image.title):
            candidates.append(image)
    return max(candidates, key=version_key) if candidates else None
