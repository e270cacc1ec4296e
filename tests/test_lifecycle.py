"""Daemons and signals: SIGTERM stops a daemon with exit 0; SIGHUP reloads what it can
(the catalogue: publishers and log level) and never kills it; a config that no longer
loads is logged and the running one kept."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
from support import NODECACHE, CatalogueProcess, NodeProcess, hash_token, make_config, node_config

from vmic.pki import KeyPaths


async def logged_until(log: Path, text: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while text not in log.read_text():
        assert time.monotonic() < deadline, f"{text!r} not in {log}: {log.read_text()[-1000:]}"
        await asyncio.sleep(0.05)


async def test_sighup_reloads_the_catalogues_publishers(keys: KeyPaths, tmp_path: Path) -> None:
    config = make_config(tmp_path / "data", keys)
    catalogue = CatalogueProcess(config, tmp_path / "vmic.toml").start()
    url = f"http://127.0.0.1:{config.port}"
    try:
        async with aiohttp.ClientSession() as http:
            headers = {"Authorization": "Bearer dave-token"}
            async with http.get(f"{url}/api/v1/uploads", headers=headers) as response:
                assert response.status == 401
            with open(catalogue.config_path, "a") as out:  # a new publisher, dave
                out.write(f'[catalogue.publishers.dave]\ntoken_sha256 = "{hash_token("dave-token")}"\n'
                          'namespaces = ["dave"]\n')
            assert catalogue.proc is not None
            catalogue.proc.send_signal(signal.SIGHUP)
            await logged_until(catalogue.log, "config.reloaded")
            async with http.get(f"{url}/api/v1/uploads", headers=headers) as response:
                assert response.status == 200, "dave's token works without a restart"
            catalogue.config_path.write_text(catalogue.config_path.read_text() + "nonsense = \n")
            catalogue.proc.send_signal(signal.SIGHUP)
            await logged_until(catalogue.log, "config.reload_failed")
            async with http.get(f"{url}/api/v1/uploads", headers=headers) as response:
                assert response.status == 200, "a broken file keeps the running config"
        catalogue.proc.send_signal(signal.SIGTERM)
        assert catalogue.proc.wait(30) == 0
    finally:
        catalogue.stop()


async def test_sighup_does_not_kill_a_node_and_sigterm_is_exit_0(catalogue: Any, keys: KeyPaths,
                                                                   tmp_path: Path) -> None:
    node = await NodeProcess(node_config(tmp_path / "node", catalogue.url, keys), tmp_path).start()
    try:
        assert node.proc is not None
        # a second daemon on the same cache stops at once, one line, and takes nothing from the first
        second = await asyncio.create_subprocess_exec(*NODECACHE, "-c", str(node.path), "run",
                                                      stderr=asyncio.subprocess.PIPE)
        _, err = await second.communicate()
        assert second.returncode == 2 and err.decode().count("\n") == 1 and "another daemon answers" in err.decode()
        assert (await node.get("/status"))["catalogues"], "the first one still answers on its socket"
        node.proc.send_signal(signal.SIGHUP)
        await logged_until(node.log, "config.reloaded")
        assert node.proc.poll() is None and (await node.get("/status"))["catalogues"]
        node.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(node.proc.wait, 30) == 0
    finally:
        node.stop()
