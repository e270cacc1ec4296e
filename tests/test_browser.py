"""The HTML page in a real headless browser (Debian's chromium)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from support import RunningCatalogue, upload_request, write_image

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


async def chromium(*args: str, profile: Path) -> str:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (tools/test installs it: apt-get install chromium)")
    proc = await asyncio.create_subprocess_exec(
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic",
        f"--user-data-dir={profile}", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=90)
    return out.decode()


async def test_page_lists_images_in_a_real_browser(catalogue: RunningCatalogue, tmp_path: Path) -> None:
    for version, size in (("2026.11.01", 2 * 2**20), ("2026.11.24", 3 * 2**20)):
        image_file = write_image(tmp_path / f"{version}.raw", size)
        async with catalogue.client() as client:
            await client.upload(image_file, upload_request(image_file, version=version, title="SLC6 batch"))
    dom = await chromium("--dump-dom", f"{catalogue.url}/", profile=tmp_path / "profile")
    assert "<title>vmic image list</title>" in dom
    rows = dom.split("<tbody>")[1].split("</tbody>")[0].count("<tr>")
    assert rows == 2
    for text in ("SLC6 batch", "2026.11.01", "2026.11.24", "2.0 MiB", "3.0 MiB", "Debian 12 x86_64", "never"):
        assert text in dom, text
    version = catalogue.catalogue.listing.current.image_list.version
    assert f'<span id="list-version">{version}</span>' in dom

    screenshot = tmp_path / "page.png"
    await chromium(f"--screenshot={screenshot}", "--window-size=1200,500", f"{catalogue.url}/",
                   profile=tmp_path / "profile2")
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
