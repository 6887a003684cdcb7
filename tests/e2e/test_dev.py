"""`taskforge dev` as a new user runs it: embedded stores, a ping job, Ctrl-C stops it all."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile

import aiohttp
import psutil
import pytest

from taskforge.embedded import free_port
from tests.e2e.deployables import ROOT, wait_finished, wait_ready

pytestmark = pytest.mark.e2e


def _start_dev(data: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "taskforge", "dev", "--data-dir", data],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


async def test_dev_on_embedded_stores_runs_a_job_and_stops_on_ctrl_c():
    data = tempfile.mkdtemp(prefix="tfdev-")  # short: PostgreSQL's socket path is limited
    http_port, ops_port = free_port(), free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"TASKFORGE_POSTGRES_URL", "TASKFORGE_REDIS_URL"}
    }
    env.update(
        TASKFORGE_HTTP_PORT=str(http_port), TASKFORGE_OPS_PORT=str(ops_port), PYTHONPATH=str(ROOT)
    )
    dev = _start_dev(data, env)
    try:
        await wait_ready(ops_port, timeout=90)
        children = psutil.Process(dev.pid).children(recursive=True)
        api = f"http://127.0.0.1:{http_port}"
        async with aiohttp.ClientSession() as session:
            async with session.post(
                f"{api}/v1/jobs", json={"type": "ping", "payload": {"message": "hi"}}
            ) as r:
                assert r.status == 202
                job_id = (await r.json())["id"]
            job = (await wait_finished(session, api, [job_id], 30))[job_id]
        assert (job["status"], job["result"]) == ("completed", {"message": "hi"})
        dev.send_signal(signal.SIGINT)  # what Ctrl-C sends
        output = dev.communicate(timeout=60)[0].decode()
        assert dev.returncode == 0, output[-3000:]
        assert "taskforge dev is up" in output and "stopped" in output
        assert not [c for c in children if c.is_running() and c.status() != "zombie"]
    finally:
        if dev.poll() is None:
            dev.kill()
            dev.wait()
        shutil.rmtree(data, ignore_errors=True)
