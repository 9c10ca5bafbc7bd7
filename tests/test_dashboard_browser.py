"""The dashboard in a real headless Chromium (Debian's, driven by Playwright): a running demo slice, the
topology, a chart that updates, and a node failure that turns the node red and shows the relocation in the
decision log. Saves a screenshot (with MLSYSOPS_SCREENSHOT=docs/dashboard.png: the README's)."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
import uuid
from pathlib import Path

import pytest
import pytest_asyncio

from mlsysops.continuum.api_auth import Role
from tests.support import demo_slice, until

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("MLSYSOPS_CHROMIUM", "/usr/bin/chromium")
# 1 s heartbeats: Chromium shares the (2-core CI) machine, and a node must only turn red when we crash it.
FAST = {"all": {"heartbeat": 1.0, "analyze": 0.5, "monitor": 0.2, "status_report": 0.5,
                "digest_interval": 0.5}}
TOKEN = "admin-" + uuid.uuid4().hex
# The picture goes to the test's tmp dir; MLSYSOPS_SCREENSHOT=docs/dashboard.png refreshes the README's.
SCREENSHOT_ENV = "MLSYSOPS_SCREENSHOT"


def _browser_available() -> str | None:
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[test]')"
    if not (os.access(CHROMIUM, os.X_OK) or shutil.which(CHROMIUM)):
        return f"no chromium at {CHROMIUM} (apt-get install chromium)"
    return None


_missing = _browser_available()
if _missing and os.environ.get("CI") == "true":
    raise RuntimeError(f"the browser test must run in CI: {_missing}")   # fail loudly, never skip in CI
pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(180), pytest.mark.browser,
              pytest.mark.skipif(_missing is not None, reason=_missing or "")]


@pytest_asyncio.fixture(loop_scope="session")
async def demo(prosody):
    async with demo_slice(prosody.port, FAST, {TOKEN: Role.admin}) as (rt, url):
        for f in sorted((ROOT / "examples" / "apps").glob("*.yaml")):
            rt.apply_file(f)
        yield rt, url


async def test_dashboard_shows_topology_live_charts_and_a_node_failure(demo, tmp_path):
    rt, url = demo
    cont = rt.continuum
    loop = asyncio.get_running_loop()

    def all_running() -> bool:
        return bool(cont.apps) and all(st["status"] == "running" for app in cont.apps
                                       for st in cont.app_status(app).values())

    await until(all_running, 30, "the demo apps never ran")
    # sensor-reader can move (another node has its sensor); the detector could not (one GPU node).
    victim = cont.app_status("env-monitor")["sensor-reader"]["nodes"][0]

    def on_loop(fn):   # run `fn` on the agents' loop (the browser runs in a worker thread)
        async def call():
            return fn()
        return asyncio.run_coroutine_threadsafe(call(), loop).result(10)

    def component_nodes() -> list[str]:
        return on_loop(lambda: list(cont.app_status("env-monitor")["sensor-reader"]["nodes"]))

    # Playwright's own asyncio subprocess handling does not work under the test loop, so the (sync) browser
    # drive runs in a thread while the slice keeps running on this loop.
    shot = Path(os.environ.get(SCREENSHOT_ENV) or tmp_path / "dashboard.png")
    await asyncio.to_thread(_drive_browser, url, rt, victim, on_loop, component_nodes, shot)
    assert shot.stat().st_size > 10_000


def _drive_browser(url: str, rt, victim: str, on_loop, component_nodes, shot: Path) -> None:
    from playwright.sync_api import sync_playwright

    comp = "env-monitor/sensor-reader"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{url}/dashboard#token={TOKEN}")

            # Topology: every cluster and node, all up, with components under their nodes.
            for cid in rt.spec.clusters:
                page.locator(f'[data-cluster="{cid}"][data-state="up"]').wait_for(timeout=15000)
            for node in rt.spec.nodes:
                page.locator(f'[data-node="{node}"][data-state="up"]').wait_for(timeout=15000)
            assert "#token" not in page.url                        # the token left the address bar
            page.locator(f'[data-node="{victim}"] [data-component="{comp}"]').wait_for(timeout=10000)

            # A chart updates: its point count grows while we watch.
            chart = page.locator("#chart-cpu")
            chart.locator("canvas").first.wait_for(timeout=15000)
            first = int(chart.get_attribute("data-points"))
            page.wait_for_function(
                f"() => Number(document.querySelector('#chart-cpu').dataset.points) > {first}", timeout=10000)
            for per_component in ("#chart-qos", "#chart-ccpu", "#chart-cmem"):   # component charts draw too
                page.locator(f"{per_component} canvas").first.wait_for(timeout=15000)

            assert page.locator('[data-node][data-state="down"]').count() == 0   # nothing red before the crash
            # Inject a node failure: the node turns down, the banner says so, the relocation is in the log.
            on_loop(lambda: rt.fail_node(victim))
            page.locator(f'[data-node="{victim}"][data-state="down"]').wait_for(timeout=20000)
            page.locator("#banner", has_text=f"node {victim}").wait_for(timeout=10000)
            relocation = page.locator('#decisions tr[data-stage="plan"][data-outcome="planned"]',
                                      has_text="sensor-reader").filter(has_text=victim)
            relocation.first.wait_for(timeout=30000)
            deadline = time.monotonic() + 30
            while not [n for n in component_nodes() if n != victim]:
                assert time.monotonic() < deadline, "sensor-reader never moved"
                time.sleep(0.1)
            moved_to = [n for n in component_nodes() if n != victim][0]
            page.locator(f'[data-node="{moved_to}"] [data-component="{comp}"]').wait_for(timeout=15000)
            page.wait_for_timeout(1500)   # let the charts draw a few more points for the picture
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shot))
            assert not errors, errors
        finally:
            browser.close()


async def test_api_docs_render_offline_from_the_slices_own_server(demo):
    """/docs in Chromium: the operations render, and every script, style and font comes from the slice's
    server (an air-gapped testbed has no CDN)."""
    _, url = demo
    await asyncio.to_thread(_drive_docs, url)


def _drive_docs(url: str) -> None:
    from urllib.parse import urlsplit

    from playwright.sync_api import sync_playwright

    own = urlsplit(url).netloc
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"])
        try:
            page = browser.new_page()
            requested: list[str] = []
            page.on("request", lambda req: requested.append(req.url))
            for path, ready in (("/docs", ".opblock-summary-path"),):
                requested.clear()
                page.goto(f"{url}{path}")
                page.locator(ready).first.wait_for(timeout=30000)
                assert page.locator(ready).count() > 10, path        # the operations are there
                foreign = [u for u in requested if urlsplit(u).scheme in ("http", "https")
                           and urlsplit(u).netloc != own]
                assert not foreign, (path, foreign)
            assert page.get_by_text("/api/v1/apps").count() > 0
        finally:
            browser.close()


async def test_the_apps_table_says_why_a_component_does_not_run(demo, tmp_path):
    rt, url = demo
    big = tmp_path / "big.yaml"
    big.write_text("""
MLSysOpsApp:
  name: big
  cluster_placement: {cluster_id: [edge-1]}
  components:
    - metadata: {name: cruncher}
      node_placement: {continuum_layer: [edge]}
      containers:
        - image: registry.example.org/cruncher:1
          platform_requirements: {cpu: {requests: "64"}, memory: {requests: 64Mi}}
""")
    rt.apply_file(big)
    try:
        await asyncio.to_thread(_drive_why, url)
    finally:
        await rt.continuum.remove_app("big")


def _drive_why(url: str) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"])
        try:
            page = browser.new_page()
            page.goto(f"{url}/dashboard#token={TOKEN}")
            why = page.locator('tr[data-app="big"][data-component="cruncher"] .why')
            why.wait_for(timeout=30000)
            page.wait_for_function("() => document.querySelector("
                                   "'tr[data-app=\"big\"] .why').textContent.includes('64 cpu cores')", timeout=30000)
            row = page.locator('tr[data-app="big"][data-component="cruncher"]').inner_text()
            assert "no node in layer [edge] has 64 cpu cores" in row and "next: lower the cpu request" in row
        finally:
            browser.close()
