#!/usr/bin/env python3
"""Write docs/config.rst, the reference of every daemon's settings, from the config
dataclasses themselves (types, defaults, and the ``#:`` comment of each field).

    tools/config_reference.py            # rewrite docs/config.rst
    tools/config_reference.py --check    # exit 1 if docs/config.rst differs (tests/test_config_language.py)
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import sys
import textwrap
import typing
from pathlib import Path
from typing import Annotated, Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from distributor.seeder.daemon import SeederConfig  # noqa: E402
from distributor.tracker.server import TrackerConfig  # noqa: E402
from nodecache.config import NodeConfig, ProvisionConfig, Selection  # noqa: E402
from vmic.catalogue.config import CatalogueConfig, Publisher  # noqa: E402
from vmic.catalogue_source import CatalogueSource  # noqa: E402
from vmic.units import parse_duration, parse_listen, parse_optional_listen, parse_size, parse_wait  # noqa: E402

TARGET = ROOT / "docs" / "config.rst"

#: (table heading, dataclass, fields left out (documented as their own tables), what the table is)
TABLES: list[tuple[str, type, tuple[str, ...], str]] = [
    ("[catalogue]", CatalogueConfig, ("publishers",), "The catalogue (``vmic serve``)."),
    ("[catalogue.publishers.NAME]", Publisher, ("name",),
     "One per publisher (``vmic token NAME`` prints one); NAME is the publisher's name."),
    ("[tracker]", TrackerConfig, ("catalogue",), "The tracker (``distributor tracker``); its catalogue: "
     "``[tracker.catalogue]``."),
    ("[seeder]", SeederConfig, ("catalogue",), "The seeder (``distributor seeder``); its catalogue: "
     "``[seeder.catalogue]``."),
    ("[nodecache]", NodeConfig, ("catalogues", "select", "provision"),
     "The node cache daemon (``nodecache run``) and ``vmprov``; its catalogues: ``[[nodecache.catalogue]]``."),
    ("catalogue table: [tracker.catalogue], [seeder.catalogue], [[nodecache.catalogue]]", CatalogueSource, (),
     "Which catalogue a follower follows and whom it trusts: spelled the same in every follower."),
    ("[nodecache.select], [nodecache.provision.allow]", Selection, (),
     "Which images a node pre-stages (select) or lets VMs run (allow). Empty lists match everything."),
    ("[nodecache.provision]", ProvisionConfig, ("allow",), "How ``vmprov`` starts VMs on this node."),
]


def field_docs(cls: type) -> dict[str, str]:
    """The ``#:`` comment lines above each field of ``cls`` (and its bases), or at the end of its line."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass) or klass.__module__ == "builtins":
            continue
        lines, _ = inspect.getsourcelines(klass)
        tree = ast.parse(textwrap.dedent("".join(lines)))
        body = tree.body[0]
        assert isinstance(body, ast.ClassDef)
        for node in body.body:
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                line = lines[node.lineno - 1]
                above = []
                index = node.lineno - 2
                while index >= 0 and lines[index].strip().startswith("#:"):
                    above.insert(0, lines[index].strip()[2:].strip())
                    index -= 1
                trailing = line.split("#:", 1)[1].strip() if "#:" in line else ""
                text = " ".join(above + ([trailing] if trailing else []))
                if text:
                    docs[node.target.id] = text
    return docs


def kind_of(hint: Any) -> str:
    if typing.get_origin(hint) is Annotated:
        parse = hint.__metadata__[0]
        return {parse_size: "size", parse_duration: "duration", parse_listen: "host:port",
                parse_optional_listen: "host:port or empty", parse_wait: "duration or 0"}[parse]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if len(args) == 1 and type(None) in typing.get_args(hint):
        return kind_of(args[0]) + ", optional"
    if typing.get_origin(hint) is tuple:
        return "list of " + kind_of(typing.get_args(hint)[0])
    if typing.get_origin(hint) is dict:
        return "table"
    return {Path: "path", str: "string", int: "integer", float: "number", bool: "true/false"}.get(hint, str(hint))


def human(value: Any, kind: str) -> str:
    if kind == "size" and value:
        for unit, factor in (("T", 2**40), ("G", 2**30), ("M", 2**20), ("K", 2**10)):
            if value % factor == 0:
                return f'"{value // factor}{unit}"'
    if kind == "duration":
        for unit, factor in (("d", 86400), ("h", 3600), ("m", 60)):
            if value >= factor and value % factor == 0:
                return f'"{int(value // factor)}{unit}"'
        return f'"{value:g}s"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, Path)):
        return f'"{value}"'
    if isinstance(value, tuple):
        return "[]" if not value else "[" + ", ".join(human(v, "") for v in value) + "]"
    return repr(value)


def default_of(field: dataclasses.Field[Any], kind: str) -> str:
    if field.default is not dataclasses.MISSING:
        return "none" if field.default is None else human(field.default, kind)
    if field.default_factory is not dataclasses.MISSING:
        name = getattr(field.default_factory, "__name__", "")
        return "the host name" if name == "gethostname" else "empty"
    return "required"


def reference() -> str:
    out = ["Configuration reference", "=======================", "",
           ".. generated by tools/config_reference.py from the config classes; edit those, not this file",
           "",
           "Each daemon reads one TOML file (``-c FILE``, before or after the subcommand) and checks it with",
           "``config check`` (``vmic config check``, ``distributor config check``, ``nodecache config check``).",
           "Unknown settings are errors; a setting spelled as in an earlier release names its new spelling.",
           "Any scalar setting may also come from the environment as ``VMIC_<SECTION>_<NAME>``",
           "(``VMIC_CATALOGUE_LISTEN``, ``VMIC_NODECACHE_UPLOAD_LIMIT``, ...).",
           "",
           "Spellings shared by every daemon: a *size* is bytes or ``\"64M\"``, ``\"1.5G\"`` (K, M, G, T: powers of",
           "1024); a *duration* is seconds or ``\"90s\"``, ``\"5m\"``, ``\"48h\"``, ``\"7d\"``; an address to listen on",
           "is ``\"host:port\"`` (``\"[::1]:8470\"``, ``\":6881\"`` for every address); ``tls_ca`` is always the CA of an",
           "HTTPS server this daemon connects to, trusted besides the system's CAs; ``ca`` is always the CA of",
           "the list's endorser.", ""]
    for heading, cls, skip, what in TABLES:
        docs = field_docs(cls)
        hints = typing.get_type_hints(cls, include_extras=True)
        out += [f"``{heading}``" if heading.startswith("[") else heading,
                "-" * (len(heading) + (4 if heading.startswith("[") else 0)), "", what, ""]
        for field in dataclasses.fields(cls):  # type: ignore[arg-type]
            if field.name in skip:
                continue
            kind = kind_of(hints[field.name])
            default = default_of(field, kind)
            out.append(f"``{field.name}`` ({kind}; {'required' if default == 'required' else 'default ' + default})")
            doc = docs.get(field.name)
            if doc is None:
                raise SystemExit(f"{cls.__name__}.{field.name} has no #: comment")
            out += textwrap.wrap(doc, 100, initial_indent="    ", subsequent_indent="    ")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/config.rst is out of date")
    args = parser.parse_args()
    text = reference()
    if args.check:
        if not TARGET.exists() or TARGET.read_text() != text:
            print(f"{TARGET} is out of date: run tools/config_reference.py", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text)
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
