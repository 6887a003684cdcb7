"""The spans of a job, named and attributed by the OpenTelemetry messaging conventions.

One trace follows a job: the api's HTTP SERVER span → ``create <queue>`` (PRODUCER; its context
is stored with the row) → ``send <queue>`` (PRODUCER, one per dispatch, child of the stored
context; its context travels in the stream entry's headers) → ``process <queue>`` (CONSUMER,
child of the entry's context and linked to it; the handler runs inside it). A retry, a replay
or a rescue by the reaper is dispatched again from the same row, so its ``send`` and
``process`` spans join the same trace.

Every helper checks :data:`taskforge.telemetry.ENABLED` first and does nothing more when
tracing is off. The context travels as W3C ``traceparent``/``tracestate`` values, which
:func:`header_values` writes and :func:`context_from` reads.
"""

from __future__ import annotations

import contextlib
import re
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanKind, StatusCode

from taskforge import streams, telemetry
from taskforge.jobs import Status
from taskforge.lifecycle import ClaimedJob, DueJob, Outcome

SYSTEM = "redis"
MAX_TRACESTATE = 512  # W3C: 32 list members; longer values are cut by every vendor anyway

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_ROOT = Context()  # an explicit empty parent: a job without stored context starts a new trace
_NO_SPAN: contextlib.nullcontext[None] = contextlib.nullcontext(None)


def _messaging(operation: str, queue: str | None) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "messaging.system": SYSTEM,
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
    }
    if queue is not None:
        attributes["messaging.destination.name"] = queue
    return attributes


def header_values(span_context: trace.SpanContext) -> tuple[str, str | None]:
    """W3C ``traceparent`` and ``tracestate`` (None when empty) of a span context."""
    traceparent = (
        f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-"
        f"{int(span_context.trace_flags):02x}"
    )
    state = span_context.trace_state.to_header() if span_context.trace_state else ""
    return traceparent, state or None


def context_from(traceparent: str | None, tracestate: str | None = None) -> Context | None:
    """The parent context carried by W3C header values; None when absent or malformed.

    Parsed here rather than by the propagator: the dispatcher calls this once per job.
    """
    if not traceparent:
        return None
    match = _TRACEPARENT.fullmatch(traceparent.strip())
    if match is None:
        return None
    version, trace_hex, span_hex, flags_hex, rest = match.groups()
    # Version ff is invalid; a later version may add fields, version 00 may not.
    if version == "ff" or (version == "00" and rest):
        return None
    trace_id, span_id = int(trace_hex, 16), int(span_hex, 16)
    if not trace_id or not span_id:
        return None
    parent = trace.SpanContext(
        trace_id,
        span_id,
        is_remote=True,
        trace_flags=trace.TraceFlags(int(flags_hex, 16)),
        trace_state=trace.TraceState.from_header([tracestate]) if tracestate else None,
    )
    return trace.set_span_in_context(trace.NonRecordingSpan(parent), Context())


def valid_traceparent(value: str | None) -> str | None:
    """``value`` when it is a well-formed W3C traceparent, else None (never store junk)."""
    return value if context_from(value) is not None else None


class Created:
    """The ``create`` span of a submitted job, and the W3C values to store with its row."""

    __slots__ = ("span", "traceparent", "tracestate")

    def __init__(
        self, span: trace.Span | None, traceparent: str | None, tracestate: str | None
    ) -> None:
        self.span = span
        self.traceparent = traceparent
        self.tracestate = tracestate

    def stored(self, job_id: uuid.UUID, created: bool) -> None:
        """Name the stored job on the span; a repeated idempotency key created nothing."""
        if self.span is not None:
            self.span.set_attribute("taskforge.job.id", str(job_id))
            if not created:
                self.span.set_attribute("taskforge.job.duplicate", True)


@contextlib.contextmanager
def create(
    queue: str, job_type: str, traceparent: str | None, tracestate: str | None
) -> Iterator[Created]:
    """Around the insert of one job: a PRODUCER span (child of the current one, the request's)
    whose context goes into the row.

    ``traceparent``/``tracestate`` are what to store when tracing is off: the api passes the
    request's TRACEPARENT/TRACESTATE, which carry a client's context through unchanged.
    """
    if not telemetry.ENABLED:
        yield Created(None, traceparent, tracestate)
        return
    attributes = _messaging("create", queue)
    attributes["taskforge.job.type"] = job_type
    with telemetry.tracer().start_as_current_span(
        f"create {queue}", kind=SpanKind.PRODUCER, attributes=attributes
    ) as span:
        yield Created(span, *header_values(span.get_span_context()))


@contextlib.contextmanager
def create_batch(
    queues: Sequence[str], traceparent: str | None, tracestate: str | None
) -> Iterator[Created]:
    """Around the insert of a batch of jobs: one PRODUCER span whose context every row stores.

    Named ``create <queue>`` when the batch has one queue, else ``create``; each job's own
    ``send`` and ``process`` spans still follow it.
    """
    if not telemetry.ENABLED:
        yield Created(None, traceparent, tracestate)
        return
    distinct = sorted(set(queues))
    single = distinct[0] if len(distinct) == 1 else None
    attributes = _messaging("create", single)  # several queues: no one destination to name
    attributes["messaging.batch.message_count"] = len(queues)
    with telemetry.tracer().start_as_current_span(
        f"create {single}" if single else "create", kind=SpanKind.PRODUCER, attributes=attributes
    ) as span:
        yield Created(span, *header_values(span.get_span_context()))


class SendBatch:
    """The ``send`` spans of one dispatcher batch, started and ended together.

    ``headers[i]`` carries the context of job ``i``'s span into its stream entry.
    """

    def __init__(self, jobs: Sequence[DueJob]) -> None:
        tracer = telemetry.tracer()
        started = time.time_ns()
        self.spans: list[trace.Span] = []
        self.headers: list[dict[str, str]] = []
        for job in jobs:
            attributes = _messaging("send", job.queue)
            attributes["taskforge.job.id"] = str(job.id)
            attributes["taskforge.job.type"] = job.type
            attributes["taskforge.job.attempt"] = job.attempt
            span = tracer.start_span(
                f"send {job.queue}",
                context=context_from(job.traceparent, job.tracestate) or _ROOT,
                kind=SpanKind.PRODUCER,
                attributes=attributes,
                start_time=started,
            )
            traceparent, state = header_values(span.get_span_context())
            self.spans.append(span)
            self.headers.append(
                {"traceparent": traceparent, "tracestate": state}
                if state
                else {"traceparent": traceparent}
            )

    def sent(self, stream_ids: Sequence[str]) -> None:
        """The entries are in the streams: record their ids and end the spans."""
        ended = time.time_ns()
        for span, stream_id in zip(self.spans, stream_ids, strict=True):
            span.set_attribute("messaging.message.id", stream_id)
            span.end(ended)

    def failed(self, exc: BaseException) -> None:
        """The XADDs failed (the rows stay due and will be sent again): end the spans in error."""
        ended = time.time_ns()
        for span in self.spans:
            span.record_exception(exc)
            span.set_status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}")
            span.end(ended)


def send_batch(jobs: Sequence[DueJob]) -> SendBatch | None:
    """The batch's ``send`` spans, or None when tracing is off."""
    return SendBatch(jobs) if telemetry.ENABLED else None


def process(
    job: ClaimedJob, headers: Mapping[str, str] | None, consumer: str
) -> contextlib.AbstractContextManager[trace.Span | None]:
    """The CONSUMER span one attempt runs in (current for the handler, so its spans nest).

    Its parent is the stream entry's context (the ``send`` span), falling back to the row's.
    """
    if not telemetry.ENABLED:
        return _NO_SPAN
    if headers and headers.get("traceparent"):
        parent = context_from(headers["traceparent"], headers.get("tracestate"))
    else:
        parent = context_from(job.traceparent, job.tracestate)
    links = [Link(trace.get_current_span(parent).get_span_context())] if parent else None
    attributes = _messaging("process", job.queue)
    attributes.update(
        {
            "messaging.message.id": job.stream_id,
            "messaging.consumer.group.name": streams.GROUP,
            "messaging.client.id": consumer,
            "taskforge.job.id": str(job.id),
            "taskforge.job.type": job.type,
            "taskforge.job.attempt": job.attempt,
        }
    )
    span = telemetry.tracer().start_span(
        f"process {job.queue}",
        context=parent or _ROOT,
        kind=SpanKind.CONSUMER,
        attributes=attributes,
        links=links,
    )
    return trace.use_span(span, end_on_exit=True)


def processed(span: trace.Span | None, outcome: Outcome | None, cancel_reason: str | None) -> None:
    """Record how the attempt ended; failures set the span's status to ERROR."""
    if span is None:
        return
    if outcome is None:
        # Shut down: handed back to run again; "lease": another owner now decides.
        lost = cancel_reason != "shutdown"
        span.set_attribute("taskforge.job.outcome", "lease_lost" if lost else "handed_back")
        if lost:
            span.set_status(StatusCode.ERROR, "lease lost; the attempt was abandoned")
        return
    span.set_attribute("taskforge.job.outcome", outcome.status.value)
    if outcome.status in (Status.RETRYING, Status.DEAD):
        span.set_status(StatusCode.ERROR, (outcome.error or outcome.status.value).split("\n")[0])


def record_error(exc: BaseException) -> None:
    """Add an exception event to the current span (the handler's ``process`` span)."""
    if telemetry.ENABLED:
        trace.get_current_span().record_exception(exc)


def log_ids(span: trace.Span | None) -> dict[str, object]:
    """``trace_id``/``span_id`` of a span for log lines written outside it (empty if none)."""
    if span is None:
        return {}
    context = span.get_span_context()
    if not context.is_valid:
        return {}
    return {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}
