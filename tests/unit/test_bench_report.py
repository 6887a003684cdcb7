"""The bench's pure parts: percentiles and the report table."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from taskforge.bench import Result, format_table, percentiles
from taskforge.bench.report import percentiles_ms


def test_percentiles_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert percentiles(values) == {"p50": 50.0, "p95": 95.0, "p99": 99.0, "max": 100.0}
    assert percentiles([]) == {"p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0}


@given(st.lists(st.floats(min_value=0, max_value=1e6), min_size=1, max_size=200))
def test_percentiles_are_ordered_members_of_the_sample(values):
    p = percentiles(values)
    assert p["p50"] <= p["p95"] <= p["p99"] <= p["max"] == max(values)
    assert {p["p50"], p["p95"], p["p99"]} <= set(values)


def test_table_lists_each_scenario_and_resources():
    result = Result(
        "batch",
        1000,
        4,
        0.5,
        2000.0,
        0.4,
        2500.0,
        {"p50": 1.0, "p95": 2.0, "p99": 3.0, "max": 4.0},
        {"p50": 1.5, "p95": 2.5, "p99": 3.5, "max": 4.5},
        1000,
        {"worker-1": {"cpu_seconds": 1.25, "peak_rss_mb": 61.0}},
        {"p50": 0.5, "p95": 0.7, "p99": 0.9, "max": 1.0},
    )
    table = format_table([result])
    assert "batch" in table and "2,500" in table and "1.0/2.0/3.0" in table
    header, row = table.splitlines()[:2]
    assert "dispatch p50/p99 ms" in header and "0.5/0.9" in row
    assert "worker-1" in table and "61 MB" in table


def test_percentiles_ms_skip_jobs_without_a_dispatch_record():
    assert percentiles_ms([0.001, None, 0.003]) == {"p50": 1.0, "p95": 3.0, "p99": 3.0, "max": 3.0}
    assert percentiles_ms([None]) == {"p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0}
