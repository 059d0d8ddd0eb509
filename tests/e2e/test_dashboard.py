"""The web dashboard in a real browser (Debian's headless Chromium, driven by Playwright),
against a real cara-server on real PostgreSQL and a real agent on the private Docker engine.

One scenario, as a user would drive it: open Projects in one tab, apply a project through
the editor in another, watch its row go Pending → Scheduled → Running without a reload,
follow its log tail, delete it and see the row vanish; restart the server (with a tiny
event log, so the page's revision is compacted away meanwhile) and see the page reconnect,
relist after the 410 and show exactly the server's state; apply an invalid manifest and see
each field error on the line of its field. Throughout, the page raises no error of its own.

Screenshots of every step go to the test's output directory (``tmp_path``), or to
``CARA_UI_SCREENSHOTS`` when set (how ``docs/dashboard*.png`` are made).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from agent_e2e_support import (
    BIN,
    BUSYBOX,
    Agents,
    Process,
    _base_env,
    _node_ready,
    _wait_http,
    free_port,
    unique,
    wait_until,
)

from caravanserai.api import NotFound
from caravanserai.client import CaravanseraiClient

pytestmark = pytest.mark.docker

CHROMIUM = os.environ.get("CARA_TEST_CHROMIUM", "/usr/bin/chromium")
# Chromium as the probe of this machine kind runs it: no sandbox as root, and no background
# traffic (the machine has no network beyond loopback).
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
UI_TIMEOUT_MS = 30_000


@dataclass
class Server:
    """A cara-server subprocess that can be restarted on the same port and database."""

    database_url: str
    tmp_path: Path
    port: int = field(default_factory=free_port)
    process: Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, **env: str) -> None:
        full = _base_env() | {
            "DATABASE_URL": self.database_url, "HOST": "127.0.0.1", "PORT": str(self.port),
            # Open on loopback (anonymous acts as admin) unless a test passes tokens.
            "CARA_INSECURE_ALLOW_ANONYMOUS": "true",
        } | env
        self.process = Process("cara-server", [str(BIN / "cara-server")], full,
                               self.tmp_path / "server.log", self.tmp_path)
        self.process.start()
        await _wait_http(self.url + "/api/readyz", self.process)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


@pytest.fixture
async def server(database_url: str, tmp_path: Path) -> AsyncIterator[Server]:
    srv = Server(database_url, tmp_path)
    await srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def chromium(skip_or_fail: Any) -> str:
    if not (shutil.which(CHROMIUM) or Path(CHROMIUM).is_file()):
        skip_or_fail(f"no Chromium at {CHROMIUM} (apt-get install chromium; hack/test.sh does)")
    pytest.importorskip("playwright.async_api")
    return CHROMIUM


@dataclass
class Console:
    """What the pages said on their consoles. Chromium logs a refused connection or a 4xx
    answer as "Failed to load resource" — expected exactly while the test injects that
    fault; anything else at error level, and any uncaught exception, is a failure."""

    allow_network_errors: bool = False
    errors: list[str] = field(default_factory=list)

    def on_console(self, msg: Any) -> None:
        if msg.type not in ("error", "warning"):
            return
        text = msg.text
        if self.allow_network_errors and text.startswith("Failed to load resource"):
            return
        self.errors.append(f"console.{msg.type}: {text}")

    def on_pageerror(self, exc: Any) -> None:
        self.errors.append(f"uncaught: {exc}")

    @contextlib.contextmanager
    def faults(self) -> Iterator[None]:
        self.allow_network_errors = True
        try:
            yield
        finally:
            self.allow_network_errors = False


# Records every phase the row of one project showed, including ones replaced within the
# same task: removed DOM nodes keep their content, so each rendered table is in the record.
PHASE_RECORDER = """(name) => {
  window.__phases = [];
  const sel = `tr[data-name="${name}"] td.phase`;
  const note = (text) => {
    const p = window.__phases;
    if (text && p[p.length - 1] !== text) p.push(text);
  };
  new MutationObserver((records) => {
    for (const r of records) for (const n of r.addedNodes) {
      if (n.nodeType !== 1) continue;
      const cell = n.matches?.(sel) ? n : n.querySelector?.(sel);
      if (cell) note(cell.textContent.trim());
    }
  }).observe(document.body, { childList: true, subtree: true });
  window.__loaded = true;
}"""


async def _first_watch_line(url: str, resource_version: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(url + "/api/v1/projects", params={
            "watch": "true", "resourceVersion": resource_version, "timeoutSeconds": "1",
        }, timeout=aiohttp.ClientTimeout(total=10)) as resp,
    ):
        line = await resp.content.readline()
        return json.loads(line) if line.strip() else {}


def _manifest(name: str) -> str:
    return f"""apiVersion: caravanserai/v1
kind: Project
metadata:
  name: {name}
  labels:
    suite: dashboard
spec:
  services:
    - name: ticker
      image: {BUSYBOX}
      command: ["sh", "-c", "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.2; done"]
"""


INVALID = """apiVersion: caravanserai/v1
kind: Project
metadata:
  name: broken-one
spec:
  services:
    - name: web
      image: ""
      volumeMounts:
        - name: data
          mountPath: /data
"""


async def test_dashboard_live_end_to_end(
    server: Server, docker_host: str, tmp_path: Path, chromium: str, docker: Any
) -> None:
    from playwright.async_api import async_playwright, expect

    shots = Path(os.environ.get("CARA_UI_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 (once, before anything runs)
    agents = Agents(server.url, docker_host, tmp_path)
    name = unique("dash")
    console = Console()
    async with CaravanseraiClient(server.url) as api, async_playwright() as pw:
        handle = await agents.start()
        try:
            await wait_until(lambda: _node_ready(api, handle.node), what="node Ready", within=30)
            browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            context = await browser.new_context(viewport={"width": 1280, "height": 800})
            context.set_default_timeout(UI_TIMEOUT_MS)
            expect.set_options(timeout=UI_TIMEOUT_MS)
            watcher, editor = await context.new_page(), await context.new_page()
            for page in (watcher, editor):
                page.on("console", lambda m: print("CONSOLE", m.type, m.text))
                page.on("request", lambda r: print("REQ", r.url))
                page.on("requestfailed", lambda r: print("REQFAIL", r.url, r.failure))
                page.on("response", lambda r: print("RESP", r.status, r.url))
                page.on("console", console.on_console)
                page.on("pageerror", console.on_pageerror)

            # -- Projects, live, in one tab; the editor in another ----------------------
            await watcher.goto(server.url + "/ui/")
            await expect(watcher.locator("#conn")).to_have_attribute("data-state", "live")
            await expect(watcher.get_by_text("No projects found.")).to_be_visible()
            await watcher.evaluate(PHASE_RECORDER, name)
            await watcher.screenshot(path=shots / "01-projects-empty.png")

            await editor.goto(server.url + "/ui/#/apply")
            await editor.locator("#manifest").fill(_manifest(name))
            await editor.get_by_role("button", name="Apply", exact=True).click()
            await expect(editor.locator("#apply-results")).to_contain_text(
                f'project "{name}" created'
            )
            await editor.screenshot(path=shots / "02-applied.png")

            row = watcher.locator(f'tr[data-name="{name}"]')
            await expect(row.locator("td.phase")).to_have_text("Running")
            phases = await watcher.evaluate("window.__phases")
            assert phases == ["Pending", "Scheduled", "Running"], phases
            assert await watcher.evaluate("window.__loaded === true"), "the page was reloaded"
            await expect(row).to_contain_text(handle.node)
            await watcher.screenshot(path=shots / "03-running.png")

            # -- the project page: services, history, a growing log tail -----------------
            await row.get_by_role("link", name=name).click()
            await expect(watcher.locator("h1")).to_contain_text(name)
            await expect(watcher.locator('tr[data-service="ticker"] td.state')).to_contain_text(
                "running"
            )
            logs = watcher.locator("#logs")
            await expect(logs).to_contain_text("tick")
            first = len((await logs.inner_text()).splitlines())
            await watcher.wait_for_function(
                "(n) => document.getElementById('logs').innerText.split('\\n').length > n + 3",
                arg=first,
            )
            await watcher.screenshot(path=shots / "04-project.png")

            # -- phone-sized: the same page fits without sideways scrolling ---------------
            phone = await browser.new_page(viewport={"width": 390, "height": 844})
            phone.on("console", console.on_console)
            phone.on("pageerror", console.on_pageerror)
            await phone.goto(server.url + "/ui/#/projects")
            await expect(phone.locator(f'tr[data-name="{name}"]')).to_be_visible()
            assert await phone.evaluate(
                "document.documentElement.scrollWidth <= window.innerWidth"
            ), "the projects table overflows a phone-sized viewport"
            await phone.screenshot(path=shots / "05-phone.png")
            await phone.close()

            # -- delete with a confirmation naming the project; the row vanishes ----------
            await watcher.get_by_role("button", name="Delete").click()
            dialog = watcher.locator("#confirm")
            await expect(dialog).to_contain_text(f'Delete project "{name}"?')
            await watcher.screenshot(path=shots / "05b-confirm-delete.png")
            await dialog.get_by_role("button", name=f"Delete {name}").click()
            await watcher.get_by_role("link", name="Projects", exact=True).click()
            await expect(watcher.locator(f'tr[data-name="{name}"]')).to_have_count(0)

            # -- keyboard: Tab moves through the navigation, Enter follows a link ---------
            await watcher.get_by_role("link", name="Projects", exact=True).focus()
            await watcher.keyboard.press("Tab")
            await expect(watcher.get_by_role("link", name="Nodes", exact=True)).to_be_focused()
            await watcher.keyboard.press("Enter")
            await expect(watcher.locator(f'tr[data-name="{handle.node}"] td.state')).to_have_text(
                "Ready"
            )
            await watcher.screenshot(path=shots / "06-nodes.png")
            await watcher.get_by_role("link", name="Projects", exact=True).click()

            # -- server restart with the page's revision compacted away: 410 → relist -----
            kept = unique("kept")
            await api.projects.create(_body(kept))
            await expect(watcher.locator(f'tr[data-name="{kept}"]')).to_be_visible()
            before = (await api.projects.list()).resource_version
            with console.faults():
                # Hold the page's watches back while the log moves on without it.
                def is_watch(url: str) -> bool:
                    return "watch=true" in url

                async def refuse(route: Any) -> None:
                    await route.abort()

                await watcher.route(is_watch, refuse)
                server.stop()
                await expect(watcher.locator("#conn")).to_have_attribute(
                    "data-state", "reconnecting"
                )
                await watcher.screenshot(path=shots / "07-reconnecting.png")
                await server.start(CARA_EVENT_RETENTION="1", CARA_COMPACTION_INTERVAL="0.2")
                added = [unique("after") for _ in range(3)]
                for extra in added:
                    await api.projects.create(_body(extra))
                await api.projects.delete(kept, force=True)

                async def compacted() -> bool:
                    first_line = await _first_watch_line(server.url, before)
                    return first_line.get("type") == "ERROR" and (
                        first_line["object"].get("status") == 410
                    )

                await wait_until(compacted, what="the page's revision compacted away")
                await watcher.unroute(is_watch, refuse)
                await expect(watcher.locator("#conn")).to_have_attribute("data-state", "live")
            for extra in added:
                await expect(watcher.locator(f'tr[data-name="{extra}"]')).to_be_visible()
            await expect(watcher.locator(f'tr[data-name="{kept}"]')).to_have_count(0)
            # Still live after the relist: a change made now appears without a reload.
            await api.projects.delete(added[0], force=True)
            await expect(watcher.locator(f'tr[data-name="{added[0]}"]')).to_have_count(0)
            assert await watcher.evaluate("window.__loaded === true"), "the page was reloaded"
            await watcher.screenshot(path=shots / "08-after-restart.png")

            # -- an invalid manifest: each error on its field's line ----------------------
            await editor.locator("#manifest").fill(INVALID)
            with console.faults():  # the 422 itself is logged by Chromium as a failed load
                await editor.get_by_role("button", name="Apply", exact=True).click()
                errors = editor.locator("#apply-errors li")
                await expect(errors).to_have_count(2)
            lines = INVALID.splitlines()
            image_line = next(i for i, t in enumerate(lines, 1) if "image:" in t)
            mount_line = next(i for i, t in enumerate(lines, 1) if "- name: data" in t)
            for line, field_path in (
                (image_line, "spec.services[0].image"),
                (mount_line, "spec.services[0].volumeMounts[0].name"),
            ):
                error = editor.locator(f'#apply-errors li[data-line="{line}"]')
                await expect(error).to_contain_text(field_path)
            await expect(editor.locator(f'.gutter .err[data-line="{image_line}"]')).to_be_visible()
            await expect(editor.locator(f'.gutter .err[data-line="{mount_line}"]')).to_be_visible()
            await editor.screenshot(path=shots / "09-invalid.png")
            with contextlib.suppress(NotFound):
                await api.projects.get("broken-one")
                pytest.fail("the invalid manifest was stored")

            await browser.close()
        finally:
            for h in agents.started:
                h.stop()
            from agent_e2e_support import remove_node_objects

            for h in agents.started:
                await remove_node_objects(docker, h.node)
    print(f"dashboard screenshots: {shots}")
    assert not console.errors, "\n".join(console.errors)


def _body(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "caravanserai/v1",
        "kind": "Project",
        "metadata": {"name": name, "labels": {"suite": "dashboard"}},
        "spec": {"services": [{"name": "idle", "image": BUSYBOX,
                               "command": ["sleep", "3600"]}]},
    }


async def test_a_view_token_sees_a_read_only_dashboard(
    database_url: str, tmp_path: Path, chromium: str
) -> None:
    """Signed in with a ``view`` token (``GET /api/v1/whoami``), the dashboard offers no
    writes: no "Apply a manifest…" link and a disabled Apply button; an ``edit`` token gets
    both."""
    from playwright.async_api import async_playwright, expect

    from caravanserai.api.tokens import TokenCreate, TokenRole

    admin_token = "cara_dashboard-admin-token"
    srv = Server(database_url, tmp_path)
    await srv.start(CARA_INSECURE_ALLOW_ANONYMOUS="false", CARA_API_TOKEN=admin_token)
    try:
        async with CaravanseraiClient(srv.url, token=admin_token) as admin:
            tokens = {
                role: (await admin.tokens.create(
                    TokenCreate(name=unique(role), role=TokenRole(role)))).token
                for role in ("view", "edit")
            }
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                for role, token in tokens.items():
                    context = await browser.new_context()
                    context.set_default_timeout(UI_TIMEOUT_MS)
                    expect.set_options(timeout=UI_TIMEOUT_MS)
                    page = await context.new_page()
                    await page.goto(srv.url + "/ui/")
                    await page.locator("#token").fill(token)
                    await page.get_by_role("button", name="Sign in").click()
                    await expect(page.get_by_text(f"({role})")).to_be_visible()
                    await expect(page.get_by_text("No projects found.")).to_be_visible()
                    apply_link = page.get_by_role("link", name="Apply a manifest…")
                    await expect(apply_link).to_have_count(0 if role == "view" else 1)
                    await page.goto(srv.url + "/ui/#/apply")
                    button = page.get_by_role("button", name="Apply", exact=True)
                    if role == "view":
                        await expect(button).to_be_disabled()
                    else:
                        await expect(button).to_be_enabled()
                    await context.close()
            finally:
                await browser.close()
    finally:
        srv.stop()
