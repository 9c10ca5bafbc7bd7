"""The dashboard's management panel in a real headless Chromium: the slice in `auto` mode, the cluster's
ML policy reporting per app who acts and why (here: the heuristics, no model yet)."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

import pytest
import pytest_asyncio

from mlsysops.continuum.api_auth import Role
from tests.support import demo_slice, until
from tests.test_dashboard_browser import CHROMIUM, FAST, _missing

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "admin-" + uuid.uuid4().hex
pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(180), pytest.mark.browser,
              pytest.mark.skipif(_missing is not None, reason=_missing or "")]


@pytest_asyncio.fixture(loop_scope="session")
async def auto_slice(prosody):
    async with demo_slice(prosody.port, FAST, {TOKEN: Role.admin}) as (rt, url):
        await rt.continuum.set_mode_tree("auto")
        rt.apply_file(ROOT / "examples" / "apps" / "env-monitor.yaml")
        yield rt, url


async def test_management_panel_shows_mode_and_who_acts(auto_slice, tmp_path):
    rt, url = auto_slice
    cluster = rt.clusters["edge-1"]
    await until(lambda: "env-monitor" in cluster.mode_status()["apps"], 30, "the ML policy never reported")
    shot = Path(os.environ.get("MLSYSOPS_ML_SCREENSHOT") or tmp_path / "management.png")
    await asyncio.to_thread(_drive, url, shot)
    assert shot.stat().st_size > 2_000


def _drive(url: str, shot: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{url}/dashboard#token={TOKEN}")
            row = page.locator('#management tr[data-agent="edge-1"][data-app="env-monitor"][data-acting="heuristic"]')
            row.wait_for(timeout=20000)
            text = row.inner_text()
            assert "auto" in text and "no model yet" in text, text
            page.locator("section.management").screenshot(path=str(shot))
            assert not errors, errors
        finally:
            browser.close()
