"""The worker's slot rule: how many jobs it may claim given what runs and what waits to be
recorded."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from taskforge.worker.consumer import free_slots

concurrency = st.integers(min_value=1, max_value=1024)


@given(concurrency, st.data())
def test_claimed_and_unrecorded_jobs_never_pass_three_times_the_concurrency(c, data):
    running = data.draw(st.integers(min_value=0, max_value=c))
    held = data.draw(st.integers(min_value=0, max_value=3 * c))
    free = free_slots(c, running, held)
    if free > 0:
        assert running + free <= c
        assert running + held + free <= 3 * c


@given(concurrency, st.data())
def test_two_batches_of_outcomes_waiting_leave_every_idle_slot_free(c, data):
    running = data.draw(st.integers(min_value=0, max_value=c))
    held = data.draw(st.integers(min_value=0, max_value=2 * c))
    assert free_slots(c, running, held) == c - running


@given(concurrency, st.data())
def test_each_outcome_beyond_two_batches_holds_a_slot(c, data):
    extra = data.draw(st.integers(min_value=1, max_value=c))
    assert free_slots(c, 0, 2 * c + extra) == c - extra
