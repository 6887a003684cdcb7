"""When the reaper vacuums jobs: only without autovacuum, and past autovacuum's own rule."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from taskforge.lifecycle import JobsTableState, needs_vacuum

counts = st.integers(min_value=0, max_value=10**9)


@given(st.booleans(), counts, counts, counts)
def test_more_dead_rows_never_turn_a_vacuum_off(autovacuum, live, dead, more):
    before = needs_vacuum(JobsTableState(autovacuum, live, dead))
    after = needs_vacuum(JobsTableState(autovacuum, live, dead + more))
    assert after or not before
    if autovacuum:
        assert not after


def test_threshold_is_a_thousand_plus_two_percent_of_live_rows():
    assert not needs_vacuum(JobsTableState(False, live=100_000, dead=3_000))
    assert needs_vacuum(JobsTableState(False, live=100_000, dead=3_001))
    assert needs_vacuum(JobsTableState(False, live=0, dead=1_001))
    assert not needs_vacuum(JobsTableState(True, live=0, dead=10**9))
