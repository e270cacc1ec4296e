"""Preheat: the catalogue signs a target into the list; the node daemons it names fetch
and stage the image unasked; the tracker shows each node's progress by name."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support import TOKENS, node_config, publish_and_wait, running_node, running_seeder, until, wait_staged, write_image

from nodecache.config import Selection
from vmic.errors import BadRequest
from vmic.pki import KeyPaths
from vmic.preheat import node_from_user_agent, parse_target, targets


@pytest.mark.parametrize("body, target", [
    ({"all": True}, {"all": True}),
    ({"share": 0.25}, {"share": 0.25}),
    ({"share": 1}, {"share": 1.0}),
    ({"nodes": ["hv-2", "hv-1", "hv-2"]}, {"nodes": ["hv-1", "hv-2"]}),
    ({}, None),
    (None, None),
])
def test_targets_parse(body: Any, target: Any) -> None:
    assert parse_target(body) == target


@pytest.mark.parametrize("body", [{"all": False}, {"share": 0}, {"share": 1.5}, {"share": True}, {"nodes": []},
                                  {"nodes": ["../x"]}, {"all": True, "share": 0.5}, {"colour": "blue"}, [1]])
def test_bad_targets(body: Any) -> None:
    with pytest.raises(BadRequest):
        parse_target(body)


def test_who_a_target_names() -> None:
    assert targets({"all": True}, "hv-1", "img") and not targets(None, "hv-1", "img")
    assert targets({"nodes": ["hv-1"]}, "hv-1", "img") and not targets({"nodes": ["hv-1"]}, "hv-2", "img")
    chosen = [n for n in range(2000) if targets({"share": 0.25}, f"hv-{n}", "img")]
    assert 400 < len(chosen) < 600, "about a quarter"
    assert chosen == [n for n in range(2000) if targets({"share": 0.25}, f"hv-{n}", "img")], "stable"
    other = [n for n in range(2000) if targets({"share": 0.25}, f"hv-{n}", "other")]
    assert other != chosen, "another image lands on other nodes"
    assert node_from_user_agent("vmic-node/hv-1") == "hv-1" and node_from_user_agent("aria2/1.36") is None


async def vmic(*args: str) -> subprocess.CompletedProcess[str]:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "vmic.cli.main", *args,
                                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await proc.communicate()
    return subprocess.CompletedProcess(args, proc.returncode or 0, out.decode(), err.decode())


async def test_preheat_pushes_to_the_named_nodes_and_shows_their_progress(site: Any, keys: KeyPaths,
                                                                          tmp_path: Path) -> None:
    catalogue, tracker, _ = site
    nodes = {name: node_config(tmp_path / name, catalogue.url, keys, node_name=name, select=Selection(none=True))
             for name in ("hv-a", "hv-b")}
    async with running_seeder(catalogue, keys, tmp_path / "seeder"), \
            running_node(nodes["hv-a"]) as a, running_node(nodes["hv-b"]) as b:
        record, torrent = await publish_and_wait(catalogue, write_image(tmp_path / "g.raw", 2 * 2**20), tracker)
        await asyncio.sleep(0.5)
        assert await a.state.images() == [] and await b.state.images() == [], "nothing is pre-staged"

        remote = ("--url", catalogue.url, "--token", TOKENS["alice"])
        typo = await vmic("preheat", record["identifier"], "hv-a,hv-z", *remote)  # hv-z: no such node up
        assert typo.returncode == 1 and typo.stderr.count("\n") == 1, typo.stderr
        assert "unknown node(s) hv-z" in typo.stderr and "force" in typo.stderr
        assert catalogue.catalogue.listing.current.image_list.image(record["identifier"]).extra.get(
            "vmic:preheat") is None, "nothing was signed"
        pushed = await vmic("preheat", record["identifier"], "hv-a,hv-z", "--force", *remote)  # hv-z: to come
        assert pushed.returncode == 0, pushed.stderr
        assert pushed.stdout.strip() == f'preheat of {record["identifier"]}: {{"nodes": ["hv-a", "hv-z"]}}'
        await wait_staged(a, record["sha512"])
        assert await b.state.get(record["sha512"]) is None, "hv-b was not named"

        def seen(name: str) -> bool:
            view = tracker.swarm_view(torrent.btih)
            return any(p.name == name and p.seeding for p in view.peers)

        await until(lambda: seen("hv-a"), "the tracker seeing hv-a complete", 20)
        status = await vmic("preheat", record["identifier"], "--json", "--url", catalogue.url)
        body = json.loads(status.stdout)
        assert body["preheat"] == {"nodes": ["hv-a", "hv-z"]} and body["missing"] == ["hv-z"]
        assert [(n["name"], n["done"], n["seeding"]) for n in body["nodes"]] == [("hv-a", 1.0, True)]

        assert (await vmic("preheat", record["identifier"], "all", *remote)).returncode == 0
        await wait_staged(b, record["sha512"])
        await until(lambda: seen("hv-b"), "the tracker seeing hv-b complete", 20)
        table = await vmic("preheat", record["identifier"], "--url", catalogue.url)
        assert "hv-a" in table.stdout and "hv-b" in table.stdout and "100%" in table.stdout

        refused = await vmic("preheat", record["identifier"], "hv-a", "--url", catalogue.url, "--token",
                             TOKENS["bob"])
        assert refused.returncode == 1 and "may not preheat" in refused.stderr
