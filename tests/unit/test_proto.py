"""The committed protobuf code matches proto/ (regenerated here and compared)."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taskforge import streams

ROOT = Path(__file__).resolve().parents[2]


def test_committed_generated_code_is_not_stale(tmp_path):
    pytest.importorskip("grpc_tools")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-I",
            str(ROOT / "proto/taskforge/v1"),
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            "messages.proto",
        ],
        check=True,
        cwd=ROOT,
    )
    for name in ("messages_pb2.py", "messages_pb2.pyi"):
        fresh = (tmp_path / name).read_text()
        committed = (ROOT / "services/taskforge/pb" / name).read_text()
        assert committed == fresh, f"{name} is stale: run `make proto` and commit the result"


def test_envelope_round_trips():
    job_id = uuid.uuid4()
    data = streams.encode(job_id, "email.send", "mail", 3, 7, 12.5, {"traceparent": "00-ab-cd-01"})
    envelope = streams.decode("1-0", data)
    assert envelope is not None
    assert (envelope.job_id, envelope.type, envelope.queue, envelope.attempt) == (
        job_id,
        "email.send",
        "mail",
        3,
    )
    assert envelope.priority == 7 and envelope.timeout_seconds == 12.5
    assert envelope.headers == {"traceparent": "00-ab-cd-01"}
    assert envelope.dispatch_lock == 0  # an entry from a scheduler that held no lock


def test_dispatch_lock_round_trips():
    data = streams.encode(uuid.uuid4(), "t", "q", 1, 0, 1.0, {}, dispatch_lock=-123456789)
    envelope = streams.decode("1-0", data)
    assert envelope is not None and envelope.dispatch_lock == -123456789


def test_garbage_entry_decodes_to_none():
    assert streams.decode("1-0", b"\xff\xfe not protobuf") is None
    assert streams.decode("1-0", b"") is None  # empty message has no valid job id


def test_stream_keys_use_a_hash_tag_per_queue():
    assert streams.stream_key("mail") == "taskforge:{mail}:jobs"
    assert streams.queue_of(b"taskforge:{mail}:jobs") == "mail"


@given(
    job_type=st.text(min_size=1, max_size=40),
    queue=st.text(min_size=1, max_size=40),
    attempt=st.integers(min_value=0, max_value=2**32 - 1),
    priority=st.integers(min_value=-(2**31), max_value=2**31 - 1),
    timeout=st.floats(min_value=1e-3, max_value=1e9),
    headers=st.dictionaries(st.text(max_size=20), st.text(max_size=60), max_size=4),
    dispatch_lock=st.integers(min_value=-(2**31), max_value=2**31 - 1),
)
def test_every_field_round_trips(
    job_type, queue, attempt, priority, timeout, headers, dispatch_lock
):
    """Whatever the values, the worker reads back what the dispatcher encoded."""
    job_id = uuid.uuid4()
    before = int(time.time() * 1000)
    data = streams.encode(
        job_id, job_type, queue, attempt, priority, timeout, headers, dispatch_lock
    )
    envelope = streams.decode("7-1", data)
    assert envelope is not None
    assert envelope._replace(enqueued_at=0.0) == streams.Envelope(
        "7-1", job_id, job_type, queue, attempt, 0.0, priority, timeout, headers, dispatch_lock
    )
    assert before / 1000 <= envelope.enqueued_at <= time.time() + 0.001
