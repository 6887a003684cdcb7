"""The dashboard's routes over HTTP: page, redirect, versioned assets, settings, auth."""

from __future__ import annotations

import hashlib
import re

from taskforge import __version__
from taskforge.api.app import create_app
from taskforge.api.ui import STATIC, bundle
from tests.conftest import make_settings

TOKEN = "ui-route-token"


def app_with_auth(stores, **overrides):
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    return create_app(make_settings(stores, api_tokens=(digest,), **overrides))


async def test_ui_redirects_to_the_page(aiohttp_client, stores, clean) -> None:
    client = await aiohttp_client(app_with_auth(stores))
    response = await client.get("/ui", allow_redirects=False)
    assert response.status == 302
    assert response.headers["Location"] == "ui/"


async def test_page_and_assets_load_without_a_token_while_data_needs_one(
    aiohttp_client, stores, clean
) -> None:
    client = await aiohttp_client(app_with_auth(stores))
    page = await client.get("/ui/")
    assert page.status == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert page.headers["Cache-Control"] == "no-cache"
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    html = await page.text()
    assets = set(re.findall(r'(?:src|href)="(assets/[^"]+)"', html))
    base = f"assets/{bundle().version}"
    assert {f"{base}/app.js", f"{base}/dashboard.css", f"{base}/favicon.svg"} <= assets
    for asset in assets:
        response = await client.get(f"/ui/{asset}")
        assert response.status == 200, asset
        assert "immutable" in response.headers["Cache-Control"]
    data = await client.get("/v1/queues")
    assert data.status == 401


async def test_assets_are_versioned_by_package_version_and_content(
    aiohttp_client, stores, clean
) -> None:
    version = bundle().version
    assert version.startswith(f"{__version__}-")
    client = await aiohttp_client(app_with_auth(stores))
    script = await client.get(f"/ui/assets/{version}/queues.js")
    assert script.headers["Content-Type"].startswith("text/javascript")
    assert await script.read() == (STATIC / "queues.js").read_bytes()
    # A page from an older release gets today's file, uncached.
    stale = await client.get("/ui/assets/0.0.0-old/queues.js")
    assert stale.status == 200 and stale.headers["Cache-Control"] == "no-cache"
    for name in ("index.html", "nope.js", "..%2Fui.py"):
        missing = await client.get(f"/ui/assets/{version}/{name}")
        assert missing.status == 404, name
        assert (await missing.json())["error"]["code"] == "not_found"


async def test_config_exposes_the_trace_url_template(aiohttp_client, stores, clean) -> None:
    template = "http://localhost:16686/trace/{trace_id}"
    client = await aiohttp_client(app_with_auth(stores, trace_url_template=template))
    config = await (await client.get("/ui/config.json")).json()
    assert config["trace_url_template"] == template
    assert config["version"] == __version__
    assert config["poll_seconds"] > 0
