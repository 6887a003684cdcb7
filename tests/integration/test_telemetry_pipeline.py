"""Tracing through the real api, dispatcher and worker in one process (spans kept in memory)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from taskforge import lifecycle, streams, telemetry
from taskforge.api.app import create_app
from taskforge.jobs import Status
from taskforge.reaper.reclaim import Reclaimer
from taskforge.scheduler.dispatcher import Dispatcher
from tests.conftest import make_settings
from tests.integration.helpers import running_pipeline, wait_terminal

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT = f"00-{CLIENT_TRACE}-00f067aa0ba902b7-01"


@pytest.fixture
def exported() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry.enable(provider)
    try:
        yield exporter
    finally:
        telemetry.disable()


@pytest.fixture
async def client(aiohttp_client, stores, clean, exported):
    return await aiohttp_client(create_app(make_settings(stores)))


def in_trace(exporter: InMemorySpanExporter, trace_id: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if f"{s.context.trace_id:032x}" == trace_id]


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


async def test_a_job_is_one_trace_from_request_to_handler(
    client, pool, redis_client, settings, exported
):
    response = await client.post(
        "/v1/jobs",
        json={"type": "ping", "payload": {"message": "hi"}},
        headers={"traceparent": CLIENT},
    )
    assert response.status == 202
    job_id = uuid.UUID((await response.json())["id"])
    async with running_pipeline(pool, redis_client, settings):
        done = await wait_terminal(pool, [job_id])
    assert done[job_id].status is Status.COMPLETED
    # The row keeps the create span's context, in the client's trace.
    assert (done[job_id].traceparent or "").split("-")[1] == CLIENT_TRACE
    spans = {s.name: s for s in in_trace(exported, CLIENT_TRACE)}
    server, create = spans["POST /v1/jobs"], spans["create default"]
    send, process = spans["send default"], spans["process default"]
    assert server.kind is SpanKind.SERVER and f"{parent_of(server):016x}" == CLIENT.split("-")[2]
    assert server.attributes["http.route"] == "/v1/jobs"
    assert server.attributes["http.response.status_code"] == 202
    assert parent_of(create) == server.context.span_id
    assert parent_of(send) == create.context.span_id
    assert parent_of(process) == send.context.span_id
    assert process.attributes["taskforge.job.id"] == str(job_id)
    assert process.attributes["messaging.message.id"] == send.attributes["messaging.message.id"]


async def test_a_retried_job_stays_in_one_trace_and_failures_are_errors(
    client, pool, redis_client, settings, exported, caplog
):
    response = await client.post(
        "/v1/jobs", json={"type": "ping", "payload": {"fail": True}, "max_attempts": 2}
    )
    job_id = uuid.UUID((await response.json())["id"])
    with caplog.at_level(logging.INFO, logger="taskforge.worker"):
        async with running_pipeline(pool, redis_client, settings):
            done = await wait_terminal(pool, [job_id])
    assert (done[job_id].status, done[job_id].attempts) == (Status.DEAD, 2)
    trace_id = (done[job_id].traceparent or "").split("-")[1]
    spans = in_trace(exported, trace_id)
    create = next(s for s in spans if s.name == "create default")
    sends = [s for s in spans if s.name == "send default"]
    processes = sorted(
        (s for s in spans if s.name == "process default"),
        key=lambda s: s.attributes["taskforge.job.attempt"],
    )
    assert len(sends) == 2 and {parent_of(s) for s in sends} == {create.context.span_id}
    assert [p.attributes["taskforge.job.outcome"] for p in processes] == ["retrying", "dead"]
    assert all(p.status.status_code is StatusCode.ERROR for p in processes)
    assert {parent_of(p) for p in processes} == {s.context.span_id for s in sends}
    # The finish lines are written after the span ended, yet carry its ids.
    finished = [r for r in caplog.records if getattr(r, "action", "") == "job.finish"]
    assert {getattr(r, "trace_id", None) for r in finished} == {trace_id}
    assert {getattr(r, "span_id", None) for r in finished} == {
        f"{p.context.span_id:016x}" for p in processes
    }


async def test_a_job_rescued_by_the_reaper_stays_in_its_trace(
    client, pool, redis_client, settings, exported
):
    response = await client.post("/v1/jobs", json={"type": "ping"})
    job_id = uuid.UUID((await response.json())["id"])
    assert await Dispatcher(pool, redis_client).dispatch_once() == 1
    # A worker reads and claims the job with a short lease, then dies without a word.
    (entry,) = await streams.read(redis_client, ["default"], "doomed", 1, block_ms=1000)
    async with pool.acquire() as conn:
        (claimed,) = await lifecycle.claim(conn, [(job_id, entry[1])], "worker:doomed", 0.01)
    await asyncio.sleep(0.05)
    rescued = await Reclaimer(pool, redis_client, settings).rescue_expired()
    assert [r.id for r in rescued] == [job_id]
    async with running_pipeline(pool, redis_client, settings):
        done = await wait_terminal(pool, [job_id])
    assert done[job_id].status is Status.COMPLETED and done[job_id].attempts == 2
    trace_id = (claimed.traceparent or "").split("-")[1]
    spans = in_trace(exported, trace_id)
    create = next(s for s in spans if s.name == "create default")
    sends = [s for s in spans if s.name == "send default"]
    (process,) = [s for s in spans if s.name == "process default"]
    assert len(sends) == 2 and {parent_of(s) for s in sends} == {create.context.span_id}
    assert parent_of(process) in {s.context.span_id for s in sends}
    assert process.attributes["taskforge.job.attempt"] == 2


async def test_a_batch_submit_stores_its_create_spans_context(client, pool, exported):
    jobs = [{"type": "ping"}, {"type": "ping", "queue": "default"}]
    response = await client.post("/v1/jobs/batch", json={"jobs": jobs})
    assert response.status in (200, 201, 202, 207), await response.text()
    (create,) = [s for s in exported.get_finished_spans() if s.name == "create default"]
    assert create.attributes["messaging.batch.message_count"] == 2
    stored = await pool.fetch("SELECT traceparent FROM jobs")
    assert {row["traceparent"].split("-")[2] for row in stored} == {
        f"{create.context.span_id:016x}"
    }


async def test_client_errors_are_not_server_errors_and_probes_are_untraced(client, exported):
    assert (await client.post("/v1/jobs", json={"payload": {}})).status == 422
    assert (await client.get("/healthz")).status == 200
    (server,) = exported.get_finished_spans()
    assert server.name == "POST /v1/jobs"
    assert server.attributes["http.response.status_code"] == 422
    assert server.status.status_code is StatusCode.UNSET


async def test_with_tracing_off_a_clients_context_is_stored_as_is(aiohttp_client, stores, pool):
    client = await aiohttp_client(create_app(make_settings(stores)))
    response = await client.post(
        "/v1/jobs", json={"type": "ping"}, headers={"traceparent": CLIENT, "tracestate": "a=1"}
    )
    job_id = uuid.UUID((await response.json())["id"])
    stored = await pool.fetchrow("SELECT traceparent, tracestate FROM jobs WHERE id = $1", job_id)
    assert (stored["traceparent"], stored["tracestate"]) == (CLIENT, "a=1")
    junk = await client.post("/v1/jobs", json={"type": "ping"}, headers={"traceparent": "junk"})
    assert (await junk.json())["traceparent"] is None
