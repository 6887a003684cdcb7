"""A worker killed with SIGKILL, and one stopped with SIGTERM, in the middle of a run."""

from __future__ import annotations

import signal
import time

import pytest

from tests.chaos.conftest import running
from tests.chaos.harness import (
    Cluster,
    reruns,
    rescued_by_reason,
    run_problems,
    unfinished_on,
    wait_busy,
)

pytestmark = pytest.mark.chaos


async def test_worker_killed_mid_job_loses_nothing(shared_stores, tmp_path, figures):
    cluster = Cluster(shared_stores, tmp_path, workers=2, reapers=2)
    async with running(cluster):
        ids = await cluster.submit(300)
        await wait_busy(cluster, "worker-0")
        actor = cluster.actor("worker-0")
        killed_at, _ = cluster.kill("worker-0")
        jobs = await cluster.jobs(ids)
        assert cluster.exited() == {}
    events = await cluster.events(ids)
    runs = cluster.runs()
    assert {j["status"] for j in jobs.values()} == {"completed"}
    assert run_problems(cluster, runs) == []
    in_flight = unfinished_on(events, actor)
    assert in_flight, "the kill hit no job mid-run"
    assert reruns(runs) <= in_flight
    rescues = [e["at"] for e in events if e["actor"] == "reaper"]
    figures(
        jobs=len(ids),
        in_flight_on_killed_worker=len(in_flight),
        reruns=len(reruns(runs)),
        reaper=rescued_by_reason(events),
        rescued_after_seconds=round(max(rescues) - killed_at, 2),
        in_flight_done_after_seconds=round(
            max(jobs[j]["finished"] for j in in_flight) - killed_at, 2
        ),
    )


async def test_sigterm_mid_job_hands_back_at_once(shared_stores, tmp_path, figures):
    env = {"TASKFORGE_SHUTDOWN_GRACE": "500ms"}
    cluster = Cluster(shared_stores, tmp_path, workers=2, env=env)
    async with running(cluster):
        ids = await cluster.submit(100, seconds=2.0)
        await wait_busy(cluster, "worker-0", at_least=8)
        actor = cluster.actor("worker-0")
        stopped_at, code = cluster.kill("worker-0", signal.SIGTERM)
        drained = time.monotonic() - stopped_at
        assert code == 0
        jobs = await cluster.jobs(ids)
        assert cluster.exited() == {}
    events = await cluster.events(ids)
    runs = cluster.runs()
    assert {j["status"] for j in jobs.values()} == {"completed"}
    assert run_problems(cluster, runs) == []
    handed_back = {
        e["job_id"] for e in events if e["actor"] == actor and e["to_status"] == "pending"
    }
    assert handed_back, "the grace let every job finish; nothing was handed back"
    assert reruns(runs) <= unfinished_on(events, actor) == handed_back
    # Back to pending at once: the reaper had nothing to rescue.
    assert rescued_by_reason(events) == {}
    backs = [e["at"] for e in events if e["actor"] == actor and e["to_status"] == "pending"]
    figures(
        jobs=len(ids),
        handed_back=len(handed_back),
        reruns=len(reruns(runs)),
        worker_exit_seconds=round(drained, 2),
        handed_back_after_seconds=round(max(backs) - stopped_at, 2),
        handed_back_done_after_seconds=round(
            max(jobs[j]["finished"] for j in handed_back) - stopped_at, 2
        ),
    )
