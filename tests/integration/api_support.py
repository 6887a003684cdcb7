"""What the API tests share: an app with auth on, its client, and polling helpers."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aiohttp import web

from taskforge.api.app import create_app
from taskforge.config import Settings
from tests.conftest import Stores, make_settings

TOKEN = "tf-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def api_settings(stores: Stores, **overrides: Any) -> Settings:
    """Test settings with auth on (the one token above)."""
    overrides.setdefault("api_tokens", (hashlib.sha256(TOKEN.encode()).hexdigest(),))
    return make_settings(stores, **overrides)


@pytest.fixture
async def api(aiohttp_client, stores, clean):
    """A client of the real app (auth on) that sends the token on every request."""
    return await aiohttp_client(create_app(api_settings(stores)), headers=AUTH)


async def get_json(api, path: str, status: int = 200) -> Any:
    response = await api.get(path)
    body = await response.json()
    assert response.status == status, body
    return body


async def post_json(api, path: str, body: Any = None, status: int = 200) -> Any:
    response = await api.post(path, json=body) if body is not None else await api.post(path)
    data = await response.json()
    assert response.status == status, data
    return data


async def wait_for_job(
    api, job_id: str, done: Callable[[dict[str, Any]], bool], timeout: float = 30.0
) -> dict[str, Any]:
    """Poll GET /v1/jobs/{id} until ``done(job)``; fail with the last state otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        job = await get_json(api, f"/v1/jobs/{job_id}")
        if done(job):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} never reached the expected state: {job}")
        await asyncio.sleep(0.05)


def assert_error(body: Any, code: str) -> None:
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]


@pytest.fixture
def live_url(stores, clean) -> Iterator[str]:
    """The app served on a loopback port for the duration of the test."""
    ready = threading.Event()
    stop: list[asyncio.AbstractEventLoop] = []
    port: list[int] = []

    def serve() -> None:
        loop = asyncio.new_event_loop()
        stop.append(loop)

        async def start() -> web.AppRunner:
            runner = web.AppRunner(create_app(api_settings(stores)), access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port.append(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
            return runner

        runner = loop.run_until_complete(start())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=serve, name="api-under-test", daemon=True)
    thread.start()
    assert ready.wait(30), "the api did not start"
    try:
        yield f"http://127.0.0.1:{port[0]}"
    finally:
        stop[0].call_soon_threadsafe(stop[0].stop)
        thread.join(30)
