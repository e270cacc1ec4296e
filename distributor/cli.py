"""``distributor``: run the distributor's services.

    distributor tracker -c distributor.toml     # the [tracker] table (distributor/tracker/server.py)

Every failure is one line on stderr and a non-zero exit, as with ``vmic``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from aiohttp import web

from vmic.config import load_section, read_toml
from vmic.errors import ConfigError, VmicError
from vmic.log import event, setup

from .tracker.server import Tracker, TrackerConfig, log, make_app


def tracker_config(path: Path | None) -> TrackerConfig:
    table = dict(read_toml(path).get("tracker", {}))
    topology = table.pop("topology", {})
    if not isinstance(topology, dict) or not all(isinstance(v, list) for v in topology.values()):
        raise ConfigError('[tracker.topology] maps "site/rack" to lists of subnets')
    return load_section(TrackerConfig, "tracker", table, topology=topology)


async def run_tracker(config: TrackerConfig) -> None:
    tracker = Tracker.from_config(config)
    runner = web.AppRunner(make_app(tracker), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, config.host, config.port).start()
        event(log, "tracker.listening", host=config.host, port=config.port, catalogue=config.catalogue_url)
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="distributor", description="vmic's torrent tracker (and, later, seeder)")
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("tracker", help="run the HTTP tracker")
    t.add_argument("-c", "--config", type=Path, help="TOML file with a [tracker] table")
    args = parser.parse_args(argv)
    try:
        config = tracker_config(args.config)
        setup(config.log_level)
        asyncio.run(run_tracker(config))
    except ConfigError as exc:
        print(f"distributor: error: {exc}", file=sys.stderr)
        return 2
    except VmicError as exc:
        print(f"distributor: error: {exc} ({exc.code})", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"distributor: error: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
