"""The bench's pure parts: percentiles and the report table."""

from __future__ import annotations

import pytest
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


def _bench_args(*argv: str):
    from taskforge.cli import build_parser

    return build_parser().parse_args(["bench", *argv])


def test_bench_options_default_to_the_documented_scenarios():
    args = _bench_args()
    assert (args.jobs, args.concurrency, args.batch_concurrency, args.batch_size) == (
        20_000,
        64,
        4,
        500,
    )
    assert (args.rate, args.trickle_jobs, args.repeat, args.workers) == (100.0, 1000, 1, 1)
    args = _bench_args("-n", "300", "--batch-size", "1000", "--rate", "12.5", "--workers", "2")
    assert (args.jobs, args.batch_size, args.rate, args.workers) == (300, 1000, 12.5, 2)


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (("-n", "0"), "--jobs/-n: 0 is not at least 1"),
        (("-n", "many"), "--jobs/-n: 'many' is not a whole number"),
        (("--batch-size", "1001"), "more than the api takes in one request (1000)"),
        (("--rate", "0"), "--rate: 0 is not a rate above 0"),
        (("--rate", "inf"), "--rate: inf is not a rate above 0"),
        (("--concurrency", "-4"), "--concurrency/-c: -4 is not at least 1"),
        (("--workers", "0"), "--workers: 0 is not at least 1"),
    ],
)
def test_bench_refuses_options_it_cannot_run_naming_the_option(argv, problem, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _bench_args(*argv)
    assert exit_info.value.code == 2
    assert problem in capsys.readouterr().err
