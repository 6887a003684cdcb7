"""The job model: backoff with full jitter, time-ordered ids, terminal sets."""

from __future__ import annotations

import random
import time
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taskforge.jobs import (
    TERMINAL_STATUSES,
    Status,
    backoff_delay,
    fast_uuid,
    status_of,
    uuid7,
    uuid7s,
)


@given(
    attempt=st.integers(min_value=1, max_value=200),
    base=st.floats(min_value=0.001, max_value=60),
    maximum=st.floats(min_value=60, max_value=3600),
    seed=st.integers(),
)
def test_backoff_stays_within_its_exponential_ceiling(attempt, base, maximum, seed):
    delay = backoff_delay(attempt, base, maximum, random.Random(seed))
    ceiling = min(maximum, base * 2 ** (attempt - 1)) if attempt < 64 else maximum
    assert 0.0 <= delay <= ceiling


def test_backoff_is_jittered_not_lockstep():
    rng = random.Random(7)
    delays = {round(backoff_delay(3, 5.0, 900.0, rng), 6) for _ in range(50)}
    assert len(delays) > 40


def test_uuid7_is_version_7_and_time_ordered():
    ids = []
    for _ in range(50):
        ids.append(uuid7())
        time.sleep(0.002)
    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in ids)
    assert ids == sorted(ids)
    millis = ids[-1].int >> 80
    assert abs(millis - time.time() * 1000) < 5_000


def test_uuid7s_share_the_millisecond_and_differ_in_their_random_bits():
    ids = uuid7s(1000)
    assert len(set(ids)) == 1000
    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in ids)
    assert len({i.int >> 80 for i in ids}) == 1
    assert abs((ids[0].int >> 80) - time.time() * 1000) < 5_000
    # Both random fields vary: the 12 bits after the version and the 62 after the variant.
    assert len({(i.int >> 64) & 0xFFF for i in ids}) > 500
    assert len({i.int & ((1 << 62) - 1) for i in ids}) == 1000


@given(st.uuids())
def test_fast_uuids_are_the_standard_uuid_in_every_way_that_counts(standard):
    for made in (fast_uuid(str(standard)), fast_uuid(standard.bytes)):
        assert isinstance(made, uuid.UUID)
        assert made == standard and standard == made
        assert hash(made) == hash(standard)
        assert {standard: 1}[made] == 1  # dict keys mix: ids generated here, ids read back
        assert (str(made), made.int, made.version) == (
            str(standard),
            standard.int,
            standard.version,
        )


@pytest.mark.parametrize("garbage", ["", "not-a-uuid", "1234", b"short"])
def test_fast_uuid_refuses_what_is_not_a_uuid(garbage):
    with pytest.raises(ValueError):
        fast_uuid(garbage)


def test_terminal_statuses():
    assert {Status.COMPLETED, Status.DEAD, Status.CANCELLED} == TERMINAL_STATUSES
    assert Status("queued") is Status.QUEUED


def test_status_of_maps_every_row_text_to_its_status():
    assert all(status_of(status.value) is status for status in Status)
