"""The bench's figures: one scenario's result, percentiles, and the text table."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class Result:
    """One scenario's figures."""

    scenario: str
    jobs: int
    concurrency: int
    submit_seconds: float
    submit_rate: float
    drain_seconds: float
    drain_throughput: float
    start_latency_ms: dict[str, float]
    finish_latency_ms: dict[str, float]
    completed: int
    resources: dict[str, dict[str, float]] = field(default_factory=dict)
    # Submit → dispatched: until the dispatcher recorded the job queued, after its XADD (the
    # first such record of each job). Start minus this is the wait in the stream and the
    # claim; it says whether a backlog sits in PostgreSQL or in Redis.
    dispatch_latency_ms: dict[str, float] = field(default_factory=lambda: percentiles([]))


def percentiles(values: list[float]) -> dict[str, float]:
    """p50/p95/p99/max of ``values`` (nearest-rank), in the values' unit."""
    if not values:
        return {"p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0}
    ordered = sorted(values)

    def rank(p: float) -> float:
        index = max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))
        return ordered[index]

    return {"p50": rank(50), "p95": rank(95), "p99": rank(99), "max": ordered[-1]}


def percentiles_ms(seconds: list[float | None]) -> dict[str, float]:
    """:func:`percentiles` in ms (two decimals) of the values that exist: a job whose history
    was pruned by retention has no dispatch time."""
    return {
        k: round(v * 1000, 2) for k, v in percentiles([s for s in seconds if s is not None]).items()
    }


def format_table(results: list[Result]) -> str:
    """The results as an aligned text table."""
    header = (
        "scenario",
        "jobs",
        "conc",
        "submit/s",
        "drain/s",
        "dispatch p50/p99 ms",
        "start p50/p95/p99 ms",
        "finish p50/p99 ms",
    )
    lines = [header]
    for r in results:
        d, s, f = r.dispatch_latency_ms, r.start_latency_ms, r.finish_latency_ms
        lines.append(
            (
                r.scenario,
                str(r.jobs),
                str(r.concurrency),
                f"{r.submit_rate:,.0f}",
                f"{r.drain_throughput:,.0f}",
                f"{d['p50']:.1f}/{d['p99']:.1f}",
                f"{s['p50']:.1f}/{s['p95']:.1f}/{s['p99']:.1f}",
                f"{f['p50']:.1f}/{f['p99']:.1f}",
            )
        )
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    out = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)) for row in lines]
    for r in results:
        for name, usage in sorted(r.resources.items()):
            rss = f"  peak rss {usage['peak_rss_mb']:.0f} MB" if usage["peak_rss_mb"] else ""
            out.append(f"  {r.scenario:<8} {name:<12} cpu {usage['cpu_seconds']:.2f}s{rss}")
    return "\n".join(out)
