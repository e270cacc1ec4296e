"""Every daemon's ``/metrics`` passes ``promtool check metrics`` (Debian's prometheus
package) and follows the conventions an operator's dashboards rely on: counters end in
``_total`` and never fall, HTTP requests carry method/route/status with a latency
histogram, build and process metrics, each followed list's expiry / last success /
reachability, the endorser certificate's expiry; ``/healthz`` and ``/readyz`` on each."""

from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from support import free_port, node_config, publish_and_wait, running_node, running_seeder, wait_staged, write_image

from distributor.seeder.web import make_app as seeder_app
from vmic.pki import KeyPaths

ROOT = Path(__file__).resolve().parent.parent


async def promtool(text: str) -> str:
    """promtool's complaints about ``text`` (empty: none)."""
    if shutil.which("promtool") is None:
        pytest.fail("promtool is missing: apt-get install -y prometheus", pytrace=False)
    proc = await asyncio.create_subprocess_exec("promtool", "check", "metrics", stdin=asyncio.subprocess.PIPE,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate(text.encode())
    return (out + err).decode().strip() if proc.returncode else ""


def value(text: str, series: str) -> float:
    match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
    assert match, f"{series} not in the metrics"
    return float(match.group(1))


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with session.get(url) as response:
        return response.status, (await response.json() if url.endswith("z") else await response.text())


async def test_every_daemon_s_metrics_pass_promtool_and_follow_the_conventions(site: Any, keys: KeyPaths,
                                                                                tmp_path: Path) -> None:
    catalogue, tracker, announce_url = site
    tracker_url = announce_url.removesuffix("/announce")
    config = node_config(tmp_path / "node", catalogue.url, keys, web_seed=False)
    async with running_seeder(catalogue, keys, tmp_path / "seeder") as seeder, running_node(config) as node:
        runner = web.AppRunner(seeder_app(seeder))
        await runner.setup()
        seeder_port = free_port()
        await web.TCPSite(runner, "127.0.0.1", seeder_port).start()
        try:
            record, _ = await publish_and_wait(catalogue, write_image(tmp_path / "a.raw", 3 * 2**20), tracker)
            await wait_staged(node, record["sha512"])
            urls = {"catalogue": catalogue.url, "tracker": tracker_url, "seeder": f"http://127.0.0.1:{seeder_port}",
                    "nodecache": "http://node"}  # its socket (metrics_listen serves the same app over TCP)
            texts = {}
            async with aiohttp.ClientSession() as tcp, \
                    aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(config.socket_path))) as unix:
                for daemon, url in urls.items():
                    session = unix if daemon == "nodecache" else tcp
                    assert (await get(session, f"{url}/healthz"))[0] == 200, daemon
                    status, body = await get(session, f"{url}/readyz")
                    assert status == 200 and body["status"] == "ready", (daemon, body)
                    await get(session, f"{url}/nothing-here")  # a 404, counted under route "unmatched"
                    texts[daemon] = (await get(session, f"{url}/metrics"))[1]
        finally:
            await runner.cleanup()

    for daemon, text in texts.items():
        assert await promtool(text) == "", (daemon, await promtool(text))
        assert re.search(rf'^vmic_build_info{{daemon="{daemon}",version="[^"]+"}} 1.0$', text, re.MULTILINE), daemon
        assert "process_cpu_seconds_total" in text and "process_resident_memory_bytes" in text
        prefix = {"catalogue": "vmic_catalogue", "tracker": "vmic_tracker", "seeder": "vmic_seeder",
                  "nodecache": "vmic_node"}[daemon]
        assert value(text, f'{prefix}_http_requests_total{{method="GET",route="/healthz",status="200"}}') == 1
        assert value(text, f'{prefix}_http_requests_total{{method="GET",route="unmatched",status="404"}}') == 1
        assert value(text, f'{prefix}_http_request_duration_seconds_count{{method="GET",route="/readyz"}}') == 1
        if daemon != "catalogue":  # the followers: the list in force, its expiry, the last good look
            label = f'{{catalogue="{catalogue.url}"}}'
            current = catalogue.catalogue.listing.current.image_list
            assert value(text, f"{prefix}_list_version{label}") == current.version
            assert value(text, f"{prefix}_list_expiry_timestamp_seconds{label}") == current.expires.timestamp()
            assert value(text, f"{prefix}_list_last_success_timestamp_seconds{label}") > 0
            assert value(text, f"{prefix}_list_reachable{label}") == 1
            assert value(text, f"{prefix}_list_refused{label}") == 0
    cat = texts["catalogue"]
    assert value(cat, "vmic_catalogue_endorser_certificate_expiry_timestamp_seconds") > value(
        cat, "vmic_catalogue_imagelist_expiry_timestamp_seconds") > 0
    assert value(cat, 'vmic_catalogue_http_requests_total{method="POST",route="/api/v1/uploads",status="201"}') == 1
    # the node fetched from the seeder alone (no web seed): both counters show the image's bytes
    assert value(texts["nodecache"], "vmic_node_bittorrent_downloaded_bytes_total") >= 3 * 2**20
    assert value(texts["seeder"], "vmic_seeder_uploaded_bytes_total") >= 3 * 2**20
    assert value(texts["seeder"], "vmic_seeder_torrents") == 1
    assert value(texts["seeder"], "vmic_seeder_yielding_torrents") == 0  # one node is no crowd
    assert value(texts["nodecache"], "vmic_node_piece_hash_failures_total") == 0
    assert value(texts["nodecache"], "vmic_node_fetch_seconds_count") == 1
    assert value(texts["nodecache"], "vmic_node_stage_seconds_count") == 1

    # the shipped alerting rules: promtool accepts them, and every series they name is served
    rules = ROOT / "etc" / "alerts.yml"
    proc = await asyncio.create_subprocess_exec("promtool", "check", "rules", str(rules),
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, (out + err).decode()
    served = "\n".join(texts.values())
    named = set(re.findall(r"\b(vmic_[a-z_]+)", rules.read_text()))
    assert named and [n for n in sorted(named) if not re.search(rf"^(# (HELP|TYPE) )?{n}\b", served, re.M)] == []


def test_a_counter_fed_from_falling_totals_never_falls() -> None:
    from vmic.service_metrics import Accumulated

    seen = Accumulated()
    assert seen.increase({"a": 10, "b": 5}) == 15
    assert seen.increase({"a": 12, "b": 5}) == 2
    assert seen.increase({"a": 12}) == 0, "b removed: nothing added, nothing taken away"
    assert seen.increase({"a": 3, "b": 4}) == 7, "a started again (re-added), b is new again"
