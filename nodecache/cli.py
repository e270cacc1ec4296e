"""``nodecache``: run the node daemon, and talk to it.

    nodecache run -c /etc/vmic/nodecache.toml     # the daemon (systemd: systemd/vmic-nodecache.service)
    nodecache status                              # lists in force, images, jobs, cache fill
    nodecache ensure IMAGE                        # stage now (identifier or name), with a progress bar
    nodecache evict IMAGE
    nodecache gc
    nodecache refresh                             # look at the catalogues now

The client commands find the daemon's socket from the config (``-c``) or ``--socket``.
Every failure is one line on stderr and a non-zero exit, as with ``vmic``.
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
from vmic.version import add_version

from .paths import DEFAULT_CONFIG

if TYPE_CHECKING:
    from rich.table import Table

    from .client import Client


def status_tables(status: dict[str, Any]) -> list[Table]:
    from rich.table import Table

    lists = Table("catalogue", "list version", "images", "expires", "problem", title="lists in force")
    for c in status["catalogues"]:
        problem = c["refused"] and f"refused: {c['refused']}" or c["unreachable"] and f"unreachable: {c['unreachable']}"
        lists.add_row(c["url"], str(c["version"] or "-"), str(c["images"]), c["expires"] or "-", problem or "")
    images = Table("image", "version", "state", "size", "where", "used by", "identifier", title="images")
    for i in status["images"]:
        images.add_row(i["title"], i["version"], i["state"] + (f" ({i['reason']})" if i["reason"] else ""),
                       human_size(i["size"]), i["location"], ", ".join(i["references"]), i["identifier"])
    jobs = Table("image", "phase", "done", "of", title="jobs")
    for j in status["jobs"]:
        jobs.add_row(j["title"], j["phase"], human_size(j["done"]), human_size(j["total"]))
    cache = status["cache"]
    fill = Table("used", "capacity", "high", "low", title=f"cache ({status['backend']} backend)")
    fill.add_row(human_size(cache["used"]), human_size(cache["capacity"]), f"{cache['high_watermark']:.0%}",
                 f"{cache['low_watermark']:.0%}")
    return [lists, images, jobs, fill]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nodecache", description="vmic node cache daemon and its client")
    add_version(parser, "nodecache")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="run the daemon")
    st = sub.add_parser("status", help="lists, images, jobs and cache fill")
    st.add_argument("--json", action="store_true")
    en = sub.add_parser("ensure", help="stage an image now (waits), by identifier or name")
    en.add_argument("image")
    en.add_argument("--no-progress", action="store_true")
    ev = sub.add_parser("evict", help="remove a staged image (refused while a VM uses it)")
    ev.add_argument("image")
    sub.add_parser("gc", help="evict revoked/expired images, then LRU above the high watermark")
    sub.add_parser("refresh", help="look at every catalogue's list now")
    cf = sub.add_parser("config", help="the daemon's config file")
    cfsub = cf.add_subparsers(dest="config_command", required=True)
    cc = cfsub.add_parser("check", help="check the [nodecache] table and the files it names; start nothing")
    option_anywhere(parser, sub, "-c", "--config", type=Path,
                    help=f"TOML config (default {DEFAULT_CONFIG} if it exists)")
    cc.add_argument("-c", "--config", type=Path, default=argparse.SUPPRESS, help="TOML config")
    option_anywhere(parser, sub, "--socket", type=Path, help="the daemon's socket (default: from the config)")
    args = parser.parse_args(argv)
    out = console(sys.stdout)

    def config_path() -> Path | None:
        return args.config or (DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None)

    def client() -> Client:
        from .client import client_for

        return client_for(args.config, args.socket)

    def run() -> int:
        if args.command == "run":
            from vmic.log import setup

            from .config import load
            from .server import serve

            config = load(config_path())
            setup(config.log_level)

            def reload() -> list[str]:  # SIGHUP: the log level; the rest at the next start
                setup(load(config_path()).log_level)
                return ["log_level"]

            asyncio.run(serve(config, reload))
        elif args.command == "config":
            from vmic.config_check import check

            from .config import load

            print(check({"nodecache": load(config_path())}, config_path()))
        elif args.command == "status":
            status = asyncio.run(client().call("GET", "/status"))
            if args.json:
                out.print_json(data=status)
            else:
                for table in status_tables(status):
                    out.print(table)
        elif args.command == "ensure":
            from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

            with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                          disable=args.no_progress or not sys.stderr.isatty(), console=console(sys.stderr)) as bar:
                task = bar.add_task(args.image, total=None)

                def on_progress(message: dict[str, Any]) -> None:
                    bar.update(task, description=f"{message['title']} {message['version']}: {message['phase']}",
                               completed=message["done"], total=message["total"])

                record = asyncio.run(client().ensure(args.image, on_progress))
            out.print(f"{record['title']} {record['version']} staged at {record['location']} "
                      f"({record['format']}, {human_size(record['size'])})")
        elif args.command == "evict":
            record = asyncio.run(client().call("POST", "/evict", {"image": args.image}))["evicted"]
            out.print(f"evicted {record['title']} {record['version']} ({record['identifier']})")
        elif args.command == "gc":
            result = asyncio.run(client().call("POST", "/gc"))
            for e in result["evicted"]:
                out.print(f"evicted {e['identifier']} ({e['reason']})")
            out.print(f"cache holds {human_size(result['used'])}"
                      + (" (still above the high watermark: the rest is in use)" if result["over_watermark"] else ""))
        elif args.command == "refresh":
            for c in asyncio.run(client().call("POST", "/refresh")):
                problem = c["refused"] and f"refused: {c['refused']}" or c["unreachable"] and \
                    f"unreachable: {c['unreachable']}"
                out.print(f"{c['url']}: list version {c['version']}" + (f" kept ({problem})" if problem else ""))
        return 0

    return run_command("nodecache", run)


if __name__ == "__main__":
    sys.exit(main())
