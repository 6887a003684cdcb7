"""The JSON log line: its fields, the extras a call passes, trace ids, exceptions, and a
timestamp that stays right while its seconds are formatted once per second."""

from __future__ import annotations

import logging
import sys
import time

import orjson
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider

from taskforge.logs import ConsoleFormatter, JsonFormatter


def record(msg: str = "job finished", created: float | None = None, **extra: object):
    made = logging.getLogger("taskforge.worker").makeRecord(
        "taskforge.worker", logging.INFO, __file__, 1, msg, (), None, extra=extra
    )
    if created is not None:
        made.created = created
        made.msecs = (created - int(created)) * 1000
    return made


def test_a_line_holds_the_fields_and_every_extra():
    line = orjson.loads(
        JsonFormatter("worker").format(
            record(created=1_700_000_000.25, action="job.finish", job_id="j-1", attempt=2)
        )
    )
    assert line == {
        "ts": "2023-11-14T22:13:20.250Z",
        "level": "info",
        "service": "worker",
        "logger": "taskforge.worker",
        "msg": "job finished",
        "action": "job.finish",
        "job_id": "j-1",
        "attempt": 2,
    }


@given(st.lists(st.floats(min_value=0, max_value=4_102_444_800), min_size=1, max_size=20))
def test_the_timestamp_is_each_records_own_in_any_order(instants):
    formatter = JsonFormatter("api")
    for instant in instants:
        line = orjson.loads(formatter.format(record(created=instant)))
        whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(int(instant)))
        assert line["ts"] == f"{whole}.{int((instant - int(instant)) * 1000):03d}Z"


def test_a_line_inside_a_span_carries_its_trace_ids():
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("job") as span:
        line = orjson.loads(JsonFormatter("worker").format(record()))
    context = span.get_span_context()
    assert line["trace_id"] == f"{context.trace_id:032x}"
    assert line["span_id"] == f"{context.span_id:016x}"
    assert "trace_id" not in orjson.loads(JsonFormatter("worker").format(record()))


def test_an_exception_and_a_value_json_cannot_hold_are_written_as_text():
    try:
        raise ValueError("bad input")
    except ValueError:
        failed = record("failed", error=object)
        failed.exc_info = sys.exc_info()
    line = orjson.loads(JsonFormatter("worker").format(failed))
    assert "ValueError: bad input" in line["exc"]
    assert line["error"] == str(object)


def test_the_console_line_names_the_service_level_message_and_extras():
    text = ConsoleFormatter("scheduler").format(record("dispatched", jobs=3))
    assert text.split()[1:4] == ["scheduler", "INFO", "dispatched"]
    assert text.endswith("  jobs=3")
