"""The dashboard's static files: served from the package, public, never outside it."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from caravanserai.server.ui import UI_ROOT, add_ui_routes, is_ui_path


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:
    app = web.Application()
    add_ui_routes(app)
    async with TestClient(TestServer(app)) as c:
        yield c


async def test_index_and_modules_are_served_with_their_types(client: TestClient) -> None:
    resp = await client.get("/ui/")
    assert resp.status == 200
    assert resp.content_type == "text/html"
    assert '<script type="module" src="js/app.js">' in await resp.text()
    assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
    js = await client.get("/ui/js/informer.js")
    assert js.status == 200 and js.content_type == "text/javascript"
    vendored = await client.get("/ui/vendor/yaml.js")
    assert vendored.status == 200 and "parseAllDocuments" in await vendored.text()


async def test_root_and_bare_prefix_redirect_to_the_dashboard(client: TestClient) -> None:
    for path in ("/", "/ui"):
        resp = await client.get(path, allow_redirects=False)
        assert resp.status == 302 and resp.headers["Location"] == "/ui/"


@pytest.mark.parametrize(
    "path",
    ["/ui/../app.py", "/ui/%2e%2e/ui.py", "/ui/js/../../ui.py", "/ui/nope.js", "/ui/js"],
)
async def test_nothing_outside_the_ui_folder_or_missing_is_served(
    client: TestClient, path: str
) -> None:
    resp = await client.get(path)
    assert resp.status == 404


def test_every_module_the_page_imports_exists() -> None:
    index = (UI_ROOT / "index.html").read_text()
    assert (UI_ROOT / "js" / "app.js").is_file() and "js/app.js" in index
    for module in (UI_ROOT / "js").glob("*.js"):
        text = module.read_text()
        static = re.findall(r'^import .* from "([^"]+)";', text, re.MULTILINE)
        dynamic = re.findall(r'import\("([^"]+)"\)', text)
        for target in static + dynamic:
            assert (module.parent / target).resolve().is_file(), f"{module.name}: {target}"


def test_ui_paths_are_public_and_api_paths_are_not() -> None:
    assert is_ui_path("/ui/") and is_ui_path("/ui/js/app.js") and is_ui_path("/")
    assert not is_ui_path("/api/v1/projects") and not is_ui_path("/uix")
