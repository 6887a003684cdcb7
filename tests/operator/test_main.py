"""The operator's configuration and its process: ops endpoints next to kopf."""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path

import aiohttp
import pytest

from taskforge.config import ConfigError, load_settings
from taskforge.operator.main import serve
from taskforge.operator.settings import NAMESPACE_VARIABLE, load_operator_settings
from tests.operator.conftest import NAMESPACE, Emulator


def test_namespace_comes_from_the_variable_before_the_pod(tmp_path: Path) -> None:
    pod_file = tmp_path / "namespace"
    pod_file.write_text("from-pod\n")
    environ = {NAMESPACE_VARIABLE: "jobs"}
    assert load_operator_settings(environ, pod_file).namespace == "jobs"
    assert load_operator_settings({}, pod_file).namespace == "from-pod"


def test_missing_namespace_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=NAMESPACE_VARIABLE):
        load_operator_settings({}, tmp_path / "absent")


def test_bad_namespace_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"{NAMESPACE_VARIABLE}='Not_A_Namespace'"):
        load_operator_settings({NAMESPACE_VARIABLE: "Not_A_Namespace"}, tmp_path / "absent")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_operator_process_serves_health_readiness_and_metrics(
    k8s: Emulator, kubeconfig: Path, redis_url: str
) -> None:
    port = _free_port()
    settings = load_settings({}, redis_url=redis_url, ops_port=port)
    options = load_operator_settings({NAMESPACE_VARIABLE: NAMESPACE})
    stop = threading.Event()
    thread = threading.Thread(
        target=lambda: asyncio.run(serve(settings, options, stop_flag=stop)), daemon=True
    )
    thread.start()
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
            for _ in range(100):  # up to 5 s for the ops server and kopf to start
                try:
                    async with http.get("/readyz") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.05)
            async with http.get("/readyz") as response:
                assert response.status == 200, await response.text()
                assert (await response.json())["checks"] == {"redis": "ok", "kubernetes": "ok"}
            async with http.get("/healthz") as response:
                assert response.status == 200
            async with http.get("/metrics") as response:
                assert "taskforge_operator_decisions_total" in await response.text()
    finally:
        stop.set()
        await asyncio.to_thread(thread.join, 15)
    assert not thread.is_alive()
