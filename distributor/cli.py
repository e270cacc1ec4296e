"""``distributor``: run the distributor's services.

    distributor tracker -c distributor.toml     # the [tracker] table (distributor/tracker/server.py)
    distributor seeder -c distributor.toml      # the [seeder] table (distributor/seeder/daemon.py)

Every failure is one line on stderr and a non-zero exit, as with ``vmic``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from vmic.catalogue_source import load_follower
from vmic.cli.options import option_anywhere
from vmic.cli.output import run_command
from vmic.config import read_toml
from vmic.config_check import check
from vmic.errors import ConfigError
from vmic.json_body import runner_options
from vmic.lifecycle import Reload, Signals
from vmic.log import event, setup
from vmic.units import parse_listen
from vmic.version import add_version

from .seeder.daemon import Seeder, SeederConfig
from .seeder.web import make_app as seeder_app
from .tracker.server import Tracker, TrackerConfig, log, make_app


def tracker_config(path: Path | None) -> TrackerConfig:
    table = dict(read_toml(path).get("tracker", {}))
    topology = table.pop("topology", {})
    if not isinstance(topology, dict) or not all(isinstance(v, list) for v in topology.values()):
        raise ConfigError('[tracker.topology] maps "site/rack" to lists of subnets')
    return load_follower(TrackerConfig, "tracker", table, topology=topology)


async def run_seeder(config: SeederConfig, reload: Reload | None = None) -> None:
    signals = Signals(log, reload)  # before it listens
    seeder = Seeder(config)
    runner = web.AppRunner(seeder_app(seeder), access_log=None, **runner_options())
    await runner.setup()
    try:
        if config.metrics_listen:  # first: a taken port stops the start before anything else
            host, port = parse_listen(config.metrics_listen)
            await web.TCPSite(runner, host, port).start()
        await seeder.start()
        event(log, "seeder.started", listen=config.listen, catalogue=config.catalogue.url,
              blobs=str(config.blob_dir), metrics=config.metrics_listen or None)
        task = asyncio.create_task(seeder.run())
        try:
            await signals.wait()
            event(log, "seeder.stopping")
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await seeder.close()  # saves resume data: the next start seeds at once
    finally:
        await runner.cleanup()


async def run_tracker(config: TrackerConfig, reload: Reload | None = None) -> None:
    signals = Signals(log, reload)  # before it listens
    tracker = Tracker.from_config(config)
    runner = web.AppRunner(make_app(tracker), access_log=None, **runner_options(config.header_timeout))
    await runner.setup()
    try:
        await web.TCPSite(runner, config.host, config.port).start()
        event(log, "tracker.listening", listen=config.listen, catalogue=config.catalogue.url)
        await signals.wait()
        event(log, "tracker.stopping")
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="distributor", description="vmic's torrent tracker and seeder")
    add_version(parser, "distributor")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("tracker", help="run the HTTP tracker")
    sub.add_parser("seeder", help="run the seeder (seeds the catalogue's blob store in place)")
    cf = sub.add_parser("config", help="the config file")
    cfsub = cf.add_subparsers(dest="config_command", required=True)
    cc = cfsub.add_parser("check", help="check its [tracker] and [seeder] tables and the files they name")
    option_anywhere(parser, sub, "-c", "--config", type=Path, help="TOML file with a [tracker] or [seeder] table")
    cc.add_argument("-c", "--config", type=Path, default=argparse.SUPPRESS, help="TOML config")
    args = parser.parse_args(argv)

    def run() -> int:
        def load_seeder() -> SeederConfig:
            return load_follower(SeederConfig, "seeder", read_toml(args.config).get("seeder", {}))

        def log_level_of(load: Callable[[], TrackerConfig | SeederConfig]) -> Reload:
            def reload() -> list[str]:
                setup(load().log_level)
                return ["log_level"]
            return reload

        if args.command == "config":
            document = read_toml(args.config)
            configs: dict[str, TrackerConfig | SeederConfig] = {}
            if "tracker" in document:
                configs["tracker"] = tracker_config(args.config)
            if "seeder" in document:
                configs["seeder"] = load_seeder()
            if not configs:
                raise ConfigError(f"{args.config}: no [tracker] or [seeder] table")
            print(check(configs, args.config))
        elif args.command == "tracker":
            tracker = tracker_config(args.config)
            setup(tracker.log_level)
            asyncio.run(run_tracker(tracker, log_level_of(lambda: tracker_config(args.config))))
        else:
            seeder = load_seeder()
            setup(seeder.log_level)
            asyncio.run(run_seeder(seeder, log_level_of(load_seeder)))
        return 0

    return run_command("distributor", run)


if __name__ == "__main__":
    sys.exit(main())
