"""The job's spans: kinds, names, parents, links and attributes, and nothing when tracing is off."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from taskforge import spans, telemetry
from taskforge.jobs import Status
from taskforge.lifecycle import ClaimedJob, DueJob, Outcome

CLIENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def exported() -> Iterator[InMemorySpanExporter]:
    """Tracing on, into memory, for this test only (the global provider is left alone)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry.enable(provider)
    try:
        yield exporter
    finally:
        telemetry.disable()


def due(job_id: uuid.UUID, traceparent: str | None, tracestate: str | None = None) -> DueJob:
    return DueJob(job_id, "mail", "email.send", 2, 0, 30.0, traceparent, tracestate, Status.PENDING)


def claimed(job_id: uuid.UUID, traceparent: str | None = None) -> ClaimedJob:
    now = datetime.now(UTC)
    return ClaimedJob(job_id, "mail", "email.send", {}, 2, 5, 30.0, traceparent, None, "1-0", now)


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def test_create_send_process_form_one_trace(exported):
    job_id = uuid.uuid4()
    with spans.create("mail", "email.send", None, None) as created:
        created.stored(job_id, created=True)
    batch = spans.send_batch([due(job_id, created.traceparent, created.tracestate)])
    assert batch is not None
    batch.sent(["1700000000000-0"])
    with spans.process(claimed(job_id), batch.headers[0], "worker-a") as span:
        spans.processed(span, Outcome(job_id, 2, Status.COMPLETED), None)
    by_name = {s.name: s for s in exported.get_finished_spans()}
    create, send, process = by_name["create mail"], by_name["send mail"], by_name["process mail"]
    assert (create.kind, send.kind, process.kind) == (
        SpanKind.PRODUCER,
        SpanKind.PRODUCER,
        SpanKind.CONSUMER,
    )
    assert len({s.context.trace_id for s in by_name.values()}) == 1
    assert parent_of(send) == create.context.span_id
    assert parent_of(process) == send.context.span_id
    assert [link.context.span_id for link in process.links] == [send.context.span_id]
    assert process.attributes == {
        "messaging.system": "redis",
        "messaging.destination.name": "mail",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.message.id": "1-0",
        "messaging.consumer.group.name": "workers",
        "messaging.client.id": "worker-a",
        "taskforge.job.id": str(job_id),
        "taskforge.job.type": "email.send",
        "taskforge.job.attempt": 2,
        "taskforge.job.outcome": "completed",
    }
    assert send.attributes["messaging.message.id"] == "1700000000000-0"
    assert create.attributes["taskforge.job.id"] == str(job_id)


def test_handler_spans_nest_under_process(exported):
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exported))
    with spans.process(claimed(uuid.uuid4(), CLIENT), None, "w") as span:
        assert span is not None
        child = provider.get_tracer("user").start_span("user work")
        child.end()
        spans.processed(span, None, "shutdown")
    finished = {s.name: s for s in exported.get_finished_spans()}
    assert parent_of(finished["user work"]) == finished["process mail"].context.span_id
    assert finished["process mail"].attributes["taskforge.job.outcome"] == "handed_back"


def test_process_falls_back_to_the_rows_context(exported):
    with spans.process(claimed(uuid.uuid4(), CLIENT), {}, "w"):
        pass
    (process,) = exported.get_finished_spans()
    assert f"{process.context.trace_id:032x}" == CLIENT.split("-")[1]
    assert f"{parent_of(process):016x}" == CLIENT.split("-")[2]


def test_a_job_without_stored_context_starts_its_own_trace(exported):
    batch = spans.send_batch([due(uuid.uuid4(), None), due(uuid.uuid4(), "not-a-traceparent")])
    assert batch is not None
    batch.sent(["1-0", "2-0"])
    sent = exported.get_finished_spans()
    assert [s.parent for s in sent] == [None, None]
    assert sent[0].context.trace_id != sent[1].context.trace_id


def test_failed_attempt_is_an_error_with_the_exception_recorded(exported):
    job_id = uuid.uuid4()
    with spans.process(claimed(job_id), None, "w") as span:
        try:
            raise ValueError("smtp refused")
        except ValueError as exc:
            spans.record_error(exc)
        outcome = Outcome(job_id, 2, Status.RETRYING, error="ValueError: smtp refused\ntrace")
        spans.processed(span, outcome, None)
        ids = spans.log_ids(span)
    (process,) = exported.get_finished_spans()
    assert process.status.status_code is StatusCode.ERROR
    assert process.status.description == "ValueError: smtp refused"
    assert [event.name for event in process.events] == ["exception"]
    assert process.attributes["taskforge.job.outcome"] == "retrying"
    assert ids == {
        "trace_id": f"{process.context.trace_id:032x}",
        "span_id": f"{process.context.span_id:016x}",
    }


def test_failed_send_ends_every_span_in_error(exported):
    batch = spans.send_batch([due(uuid.uuid4(), CLIENT), due(uuid.uuid4(), CLIENT)])
    assert batch is not None
    batch.failed(ConnectionError("redis went away"))
    sent = exported.get_finished_spans()
    assert len(sent) == 2
    assert all(s.status.status_code is StatusCode.ERROR for s in sent)


def test_nothing_is_built_when_tracing_is_off():
    assert not telemetry.ENABLED
    with spans.create("mail", "email.send", CLIENT, "vendor=v1") as created:
        created.stored(uuid.uuid4(), created=True)
    assert (created.span, created.traceparent, created.tracestate) == (None, CLIENT, "vendor=v1")
    assert spans.send_batch([due(uuid.uuid4(), CLIENT)]) is None
    with spans.process(claimed(uuid.uuid4(), CLIENT), None, "w") as span:
        assert span is None
        spans.record_error(RuntimeError("ignored"))
        spans.processed(span, None, None)
    assert spans.log_ids(span) == {}


def test_an_unsampled_trace_records_nothing_but_still_propagates(exported):
    unsampled = CLIENT[:-2] + "00"
    batch = spans.send_batch([due(uuid.uuid4(), unsampled)])
    assert batch is not None
    batch.sent(["1-0"])
    assert exported.get_finished_spans() == ()
    assert batch.headers[0]["traceparent"].split("-")[1] == CLIENT.split("-")[1]
    assert batch.headers[0]["traceparent"].endswith("-00")


def test_a_batch_has_one_create_span_that_every_job_stores(exported):
    with spans.create_batch(["mail", "mail"], None, None) as one_queue:
        pass
    with spans.create_batch(["mail", "sms", "mail"], None, None) as two_queues:
        pass
    first, second = exported.get_finished_spans()
    assert (first.name, first.kind, first.attributes["messaging.batch.message_count"]) == (
        "create mail",
        SpanKind.PRODUCER,
        2,
    )
    assert first.attributes["messaging.destination.name"] == "mail"
    assert second.name == "create" and "messaging.destination.name" not in second.attributes
    assert one_queue.traceparent is not None and two_queues.traceparent is not None
    assert one_queue.traceparent.split("-")[2] == f"{first.context.span_id:016x}"
