"""``vmic subscribe add|list|remove|sync``: partner catalogues this catalogue mirrors.

These talk to the running catalogue (``--url``) with an admin token (``--token`` or
``$VMIC_TOKEN``); the catalogue does the work, and keeps syncing by itself.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import VmicError
from .output import console
from .remote import call, remote

if TYPE_CHECKING:
    from ..client import CatalogueClient


class SyncFailed(VmicError):
    code = "sync_failed"


def add_arguments(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    s = sub.add_parser("subscribe", help="partner catalogues to mirror (add, list, remove, sync)")
    ssub = s.add_subparsers(dest="subscribe_command", required=True)
    add = ssub.add_parser("add", help="subscribe to a partner's signed list")
    add.add_argument("list_url", metavar="URL", help="the partner's signed list, e.g. https://site/imagelist")
    add.add_argument("--ca", type=Path, action="append", required=True, help="partner's CA file or directory")
    add.add_argument("--endorser-dn", required=True, help="the partner's endorser, e.g. /C=CH/O=Site/CN=name")
    add.add_argument("--endorser-ca", help="its issuer (default: any CA given with --ca)")
    add.add_argument("--namespace", help="where mirrored images go here (default: the subscription name)")
    add.add_argument("--name", help="subscription name (default: from the partner's host name)")
    add.add_argument("--select", action="append", default=[], metavar="KEY=VALUE",
                     help="mirror only images with this field value (repeatable; e.g. os=Debian, arch=x86_64)")
    add.add_argument("--interval", type=int, default=300, help="seconds between syncs (default 300)")
    add.add_argument("--grace", type=int, default=3600,
                     help="seconds an image may be missing from the partner's list before it is revoked here")
    remote(add, token=True)
    add.set_defaults(func=cmd_add)
    ls = ssub.add_parser("list", help="subscriptions and their state (admin token)")
    remote(ls, token=True)
    ls.set_defaults(func=cmd_list)
    rm = ssub.add_parser("remove", help="unsubscribe (mirrored images leave this catalogue's list)")
    rm.add_argument("name")
    remote(rm, token=True)
    rm.set_defaults(func=cmd_remove)
    sy = ssub.add_parser("sync", help="sync now (all subscriptions, or the ones named)")
    sy.add_argument("names", nargs="*")
    remote(sy, token=True)
    sy.set_defaults(func=cmd_sync)


def _report(result: dict[str, Any]) -> None:
    out = console(sys.stdout)
    out.print(f"{result['subscription']}: list version {result['list_version']}, "
              f"{len(result['imported'])} imported, {len(result['revoked'])} revoked")
    if result["errors"]:
        raise SyncFailed(f"{result['subscription']}: " + "; ".join(result["errors"]))


def cmd_add(args: argparse.Namespace) -> int:
    from ..imagelist.smime import ca_bundle

    request = {"url": args.list_url, "ca_pem": ca_bundle(args.ca).decode(), "endorser_dn": args.endorser_dn,
               "endorser_ca": args.endorser_ca, "namespace": args.namespace, "name": args.name,
               "select": dict(s.partition("=")[::2] for s in args.select),
               "interval_seconds": args.interval, "grace_seconds": args.grace}

    status = call(args, lambda client: client.subscribe(request))
    print(f"subscribed {status['name']} -> namespace {status['namespace']}")
    _report(status["sync"])
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from rich.table import Table

    subscriptions = call(args, lambda client: client.subscriptions(), token=True)
    table = Table("name", "url", "namespace", "state", "list version", "last success", "last error")
    for s in subscriptions:
        table.add_row(s["name"], s["url"], s["namespace"], s["state"], str(s["last_version"] or "-"),
                      s["last_success"] or "-", s["last_error"] or "")
    console(sys.stdout).print(table)
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    result = call(args, lambda client: client.unsubscribe(args.name))
    print(f"removed {result['name']}; {len(result['revoked'])} mirrored image(s) revoked")
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    async def sync_all(client: CatalogueClient) -> list[dict[str, Any]]:
        names = args.names or [s["name"] for s in await client.subscriptions()]
        return [await client.sync(name) for name in names]

    failures = []
    for result in call(args, sync_all):
        try:
            _report(result)
        except SyncFailed as exc:
            failures.append(str(exc))
    if failures:
        raise SyncFailed("; ".join(failures))
    return 0
