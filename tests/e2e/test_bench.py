"""`taskforge bench` against the deployables as separate processes (small N: it is a tool
test, not a benchmark; figures are never asserted)."""

from __future__ import annotations

import pytest

from taskforge.bench import Bench
from taskforge.bench.system import ProcessSampler
from tests.e2e.deployables import running_system

pytestmark = pytest.mark.e2e


async def test_bench_scenarios_report_every_job(stores, clean, tmp_path):
    with running_system(stores, tmp_path) as system:
        await system.ready()
        bench = Bench(system.api_url, stores.postgres_url, None)
        pids = {name: d.process.pid for name, d in system.procs.items()}
        batch = await bench.run("batch", 300, 2, 100, 0, ProcessSampler(pids))
        single = await bench.run("single", 60, 8, 0, 0, None)
        trickle = await bench.run("trickle", 10, 1, 0, 50.0, None)
    for result, jobs in ((batch, 300), (single, 60), (trickle, 10)):
        assert result.completed == jobs
        assert result.drain_throughput > 0
        assert 0 < result.start_latency_ms["p50"] <= result.finish_latency_ms["max"]
        # Every job was dispatched once, between its submit and its finish.
        assert 0 < result.dispatch_latency_ms["p50"] <= result.finish_latency_ms["max"]
        assert result.dispatch_latency_ms["max"] <= result.finish_latency_ms["max"]
    # Every deployable, plus the PostgreSQL servers and the load generator itself.
    assert set(batch.resources) == set(pids) | {"postgres", "bench"}
    assert all(batch.resources[name]["peak_rss_mb"] > 0 for name in (*pids, "bench"))
    assert batch.resources["postgres"]["cpu_seconds"] > 0
