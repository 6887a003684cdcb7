"""observe_many must leave a histogram exactly as observing each amount would."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram

from taskforge.metrics import LATENCY_BUCKETS, observe_many

amounts = st.lists(
    st.floats(min_value=0.0, max_value=1e6, allow_nan=False)
    | st.sampled_from([*LATENCY_BUCKETS[:5], 0.0]),  # on a bound: the bound's own bucket
    max_size=200,
)


def _samples(histogram: Histogram) -> dict[str, float]:
    return {
        f"{s.name}{sorted(s.labels.items())}": s.value
        for metric in histogram.collect()
        for s in metric.samples
        if not s.name.endswith("_created")
    }


@given(amounts)
def test_observe_many_matches_observe_one_by_one(values: list[float]) -> None:
    registry = CollectorRegistry()
    one = Histogram("one", "d", ["q"], buckets=LATENCY_BUCKETS, registry=registry)
    many = Histogram("many", "d", ["q"], buckets=LATENCY_BUCKETS, registry=registry)
    child = one.labels("a")
    for value in values:
        child.observe(value)
    observe_many(many.labels("a"), values)
    expected = {k.replace("one", "many", 1): v for k, v in _samples(one).items()}
    got = _samples(many)
    assert expected.keys() == got.keys()
    for key, value in expected.items():
        if key.startswith("many_sum"):
            assert math.isclose(got[key], value, rel_tol=1e-9, abs_tol=1e-9)
        else:
            assert got[key] == value, key


def test_observe_many_falls_back_to_observe_without_the_buckets() -> None:
    seen: list[float] = []

    class Plain:
        def observe(self, amount: float) -> None:
            seen.append(amount)

    observe_many(Plain(), [0.5, 2.0])
    assert seen == [0.5, 2.0]
