"""``vmprov``: VMs from the node cache, in constant time (a client of the node daemon).

    vmprov create IMAGE NAME [--memory MiB] [--vcpus N] [--pin 0,2-3] [--ttl 48h]
                  [--user-data FILE] [--context KEY=VALUE ...] [--ssh-key FILE] [--paused]
    vmprov list
    vmprov show NAME
    vmprov start NAME | stop NAME | destroy NAME
    vmprov rebase        # after the cache directory moved: repoint the overlays
    vmprov reap          # destroy VMs whose time to live is over (the daemon does it every minute)

IMAGE is an identifier or ``namespace/name`` (its newest version); if it is not staged
yet, ``create`` stages it first, with a progress bar. Every failure is one line on
stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vmic.catalogue.page import human_size
from vmic.cli.options import option_anywhere
from vmic.cli.output import console, run_command
from vmic.errors import BadRequest
from vmic.version import add_version

from ..paths import DEFAULT_CONFIG

if TYPE_CHECKING:
    from rich.table import Table


def vm_table(vms: list[dict[str, Any]]) -> Table:
    from rich.table import Table

    table = Table("name", "state", "image", "version", "memory", "vcpus", "expires", "disk")
    for vm in vms:
        table.add_row(vm["name"], "running" if vm["running"] else "stopped", vm["title"], vm["version"],
                      human_size(vm["memory_mib"] * 2**20), str(vm["vcpus"]), vm["expires_at"], vm["disk"])
    return table


def context_pairs(pairs: list[str]) -> dict[str, str]:
    result = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise BadRequest(f"--context {pair!r}: expected KEY=VALUE")
        result[key] = value
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vmprov", description="start VMs from the node cache (vmic)")
    add_version(parser, "vmprov")
    sub = parser.add_subparsers(dest="command", required=True)
    cr = sub.add_parser("create", help="create and start a VM on a copy-on-write disk")
    cr.add_argument("image", help="image identifier or namespace/name (newest version)")
    cr.add_argument("name", help="VM name: lowercase letters, digits and '-'")
    cr.add_argument("--memory", type=int, help="MiB (default: the node's)")
    cr.add_argument("--vcpus", type=int)
    cr.add_argument("--pin", help="host CPUs for the vCPUs, e.g. 0,2-3")
    cr.add_argument("--ttl", help="time to live, e.g. 48h, 90m (default: the node's, 48h)")
    cr.add_argument("--user-data", type=Path, help="cloud-init user-data file")
    cr.add_argument("--context", action="append", default=[], metavar="KEY=VALUE",
                    help="a HEPiX context.sh variable (repeatable)")
    cr.add_argument("--ssh-key", type=Path, action="append", default=[], help="public key file (repeatable)")
    cr.add_argument("--paused", action="store_true", help="start with the CPUs stopped")
    cr.add_argument("--no-progress", action="store_true")
    sub.add_parser("list", help="every VM on this node")
    for command, text in (("show", "one VM"), ("start", "start a stopped VM"), ("stop", "power a VM off"),
                          ("destroy", "destroy a VM, its disk, ISO and reference")):
        sub.add_parser(command, help=text).add_argument("name")
    sub.add_parser("rebase", help="repoint overlays at their bases after the cache directory moved")
    sub.add_parser("reap", help="destroy the VMs whose time to live is over")
    option_anywhere(parser, sub, "-c", "--config", type=Path,
                    help=f"the node daemon's TOML config (default {DEFAULT_CONFIG})")
    option_anywhere(parser, sub, "--socket", type=Path, help="the node daemon's socket (default: from the config)")
    args = parser.parse_args(argv)
    out = console(sys.stdout)

    def run() -> int:
        from ..client import client_for

        client = client_for(args.config, args.socket)
        if args.command == "create":
            body: dict[str, Any] = {"image": args.image, "name": args.name, "paused": args.paused,
                                    "context": context_pairs(args.context)}
            for key in ("memory", "vcpus", "pin", "ttl"):
                if getattr(args, key) is not None:
                    body[key] = getattr(args, key)
            if args.user_data:
                body["user_data"] = args.user_data.read_text()
            body["ssh_keys"] = [path.read_text().strip() for path in args.ssh_key]
            from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

            with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                          disable=args.no_progress or not sys.stderr.isatty(), console=console(sys.stderr)) as bar:
                task = bar.add_task(f"{args.image}: staging", total=None)

                def on_progress(message: dict[str, Any]) -> None:
                    bar.update(task, description=f"{message['title']} {message['version']}: {message['phase']}",
                               completed=message["done"], total=message["total"])

                record = asyncio.run(client.stream("/vms", body, on_progress))
            out.print(f"created {record['name']} from {record['title']} {record['version']}: disk {record['disk']}, "
                      f"context {record['iso']}")
        elif args.command == "list":
            out.print(vm_table(asyncio.run(client.call("GET", "/vms"))))
        elif args.command == "show":
            out.print_json(data=asyncio.run(client.call("GET", f"/vms/{args.name}")))
        elif args.command in ("start", "stop"):
            asyncio.run(client.call("POST", f"/vms/{args.name}/{args.command}"))
            out.print(f"{args.command}ed {args.name}".replace("stoped", "stopped"))
        elif args.command == "destroy":
            asyncio.run(client.call("DELETE", f"/vms/{args.name}"))
            out.print(f"destroyed {args.name}")
        elif args.command == "rebase":
            rebased = asyncio.run(client.call("POST", "/vms/rebase"))["rebased"]
            out.print(f"rebased {len(rebased)} overlay(s)" + (f": {', '.join(rebased)}" if rebased else ""))
        elif args.command == "reap":
            reaped = asyncio.run(client.call("POST", "/vms/reap"))["reaped"]
            out.print(f"reaped {len(reaped)} VM(s)" + (f": {', '.join(reaped)}" if reaped else ""))
        return 0

    return run_command("vmprov", run)


if __name__ == "__main__":
    sys.exit(main())
