"""Browser tests of the dashboard: headless Debian Chromium driven by Playwright.

The api runs for real (``create_app`` on a free loopback port, real PostgreSQL and Redis)
with the dispatcher and a worker in the test's loop, so jobs really finish and die. Chromium
is the system one (``/usr/bin/chromium``); Playwright never downloads a browser. Both are
installed by ``make test`` (mk/ui.mk); without them these tests fail and say so.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
import redis.asyncio as aioredis
from aiohttp import web

from taskforge.api.app import create_app
from taskforge.worker.registry import Registry
from tests.conftest import Stores, make_settings
from tests.integration.helpers import running_pipeline

CHROMIUM = os.environ.get("TASKFORGE_TEST_CHROMIUM", "/usr/bin/chromium")
# What a sandbox-less CI container needs, and nothing that reaches beyond the loopback.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "ui"
VIEWPORT = {"width": 1366, "height": 800}  # a laptop screen
WAIT_MS = 15_000  # generous: a loaded 2-core CI machine


@dataclass
class System:
    """A running api + dispatcher + worker, and an HTTP client of its API."""

    url: str
    http: aiohttp.ClientSession

    async def submit(self, job_type: str, payload: Any = None, **fields: Any) -> dict[str, Any]:
        """POST /v1/jobs; the created job."""
        headers = fields.pop("headers", None)
        body = {"type": job_type, "payload": payload or {}, **fields}
        async with self.http.post("/v1/jobs", json=body, headers=headers) as response:
            data = await response.json()
            assert response.status == 202, data
            return data  # type: ignore[no-any-return]

    async def job(self, job_id: str) -> dict[str, Any]:
        async with self.http.get(f"/v1/jobs/{job_id}") as response:
            data = await response.json()
            assert response.status == 200, data
            return data  # type: ignore[no-any-return]

    async def wait(
        self, job_ids: list[str], done: Callable[[dict[str, Any]], bool], timeout: float = 30.0
    ) -> list[dict[str, Any]]:
        """Poll the API until ``done(job)`` holds for every job; fail with their states."""
        deadline = time.monotonic() + timeout
        while True:
            jobs = [await self.job(job_id) for job_id in job_ids]
            if all(done(job) for job in jobs):
                return jobs
            if time.monotonic() > deadline:
                states = [job["status"] for job in jobs]
                raise AssertionError(f"jobs not there after {timeout}s: {states}")
            await asyncio.sleep(0.1)


@asynccontextmanager
async def running_system(
    stores: Stores,
    pool: asyncpg.Pool,
    redis: aioredis.Redis,
    *,
    registry: Registry | None = None,
    token: str | None = None,
    **overrides: Any,
) -> AsyncIterator[System]:
    """The real api on a free port plus the in-process pipeline; ``token`` turns auth on."""
    if token is not None:
        overrides["api_tokens"] = (hashlib.sha256(token.encode()).hexdigest(),)
    settings = make_settings(stores, **overrides)
    runner = web.AppRunner(create_app(settings), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        url = f"http://{host}:{port}"
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with (
            running_pipeline(pool, redis, settings, registry),
            aiohttp.ClientSession(url, headers=headers) as http,
        ):
            yield System(url, http)
    finally:
        await runner.cleanup()


@pytest.fixture
async def system(stores: Stores, pool: asyncpg.Pool, redis_client: aioredis.Redis):
    """The system with auth off and trace links to a Jaeger on localhost."""
    async with running_system(
        stores,
        pool,
        redis_client,
        trace_url_template="http://localhost:16686/trace/{trace_id}",
    ) as running:
        yield running


@pytest.fixture
async def browser():
    """Headless system Chromium; fails (never skips) when it or Playwright is missing."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"{CHROMIUM} is not installed; run `make test`, which installs Debian's chromium "
            "for the dashboard tests (mk/ui.mk), or set TASKFORGE_TEST_CHROMIUM"
        )
    try:
        from playwright.async_api import async_playwright, expect
    except ImportError:
        pytest.fail("the playwright package is missing; run `make test` (mk/ui.mk installs it)")
    expect.set_options(timeout=WAIT_MS)
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def page(browser):
    """A fresh laptop-sized tab; script errors on the page fail the test.

    Tests ask for ``page`` before the system, so a missing browser fails before anything starts.
    """
    context = await browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(WAIT_MS)
    tab = await context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}"))
    # A refused request (the 401s of the auth test) is logged as a console error by Chromium
    # itself; only the page's own errors count.
    tab.on(
        "console",
        lambda msg: (
            errors.append(msg.text)
            if msg.type == "error" and "Failed to load resource" not in msg.text
            else None
        ),
    )
    yield tab
    await context.close()
    assert not errors, f"the page reported errors: {errors}"


async def screenshot(page: Any, name: str) -> None:
    """Save a full-page screenshot under test-artifacts/ui/ (kept by CI as an artifact)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
