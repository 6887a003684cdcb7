"""Observability of the deployables run as separate processes: one trace per job across api,
scheduler and worker (exported over OTLP/HTTP to a receiver in this test), the metrics each ops
port serves, and JSON log lines that carry the trace.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from prometheus_client.parser import text_string_to_metric_families

from taskforge.embedded import free_port
from tests.e2e.deployables import System, running_system, wait_finished

pytestmark = pytest.mark.e2e

DESIGN_METRICS = {
    "taskforge_queue_depth",
    "taskforge_dlq_count",
    "taskforge_job_attempts",
    "taskforge_job_success",
    "taskforge_job_failure",
    "taskforge_job_runtime_seconds",
    "taskforge_job_time_in_queue_seconds",
    "taskforge_worker_utilization",
    "taskforge_oldest_job_age_seconds",
    "taskforge_jobs_reclaimed",
}
WAIT = 60.0  # generous: a loaded 2-core machine starts three Python processes


def _value(value: AnyValue) -> Any:
    return getattr(value, value.WhichOneof("value")) if value.WhichOneof("value") else None


def _attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


@dataclass(frozen=True)
class Exported:
    """A span as the collector received it, with the service that sent it."""

    service: str
    span: Span

    @property
    def trace_id(self) -> str:
        return self.span.trace_id.hex()

    @property
    def attributes(self) -> dict[str, Any]:
        return _attributes(self.span.attributes)


class Receiver:
    """An OTLP/HTTP trace receiver: POST /v1/traces with a protobuf ExportTraceServiceRequest."""

    def __init__(self) -> None:
        self.spans: list[Exported] = []

    async def export(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        message = ExportTraceServiceRequest.FromString(body)
        for resource_spans in message.resource_spans:
            service = _attributes(resource_spans.resource.attributes).get("service.name", "")
            for scope_spans in resource_spans.scope_spans:
                self.spans.extend(Exported(service, span) for span in scope_spans.spans)
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )

    def in_trace(self, trace_id: str) -> list[Exported]:
        return [s for s in self.spans if s.trace_id == trace_id]

    async def wait_for(self, trace_id: str, done: Callable[[list[Exported]], bool]) -> None:
        deadline = time.monotonic() + WAIT
        while not done(self.in_trace(trace_id)):
            if time.monotonic() > deadline:
                names = [(s.service, s.span.name) for s in self.in_trace(trace_id)]
                raise AssertionError(f"trace {trace_id} incomplete after {WAIT}s: {names}")
            await asyncio.sleep(0.1)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, int]]:
    found = Receiver()
    app = web.Application()
    app.router.add_post("/v1/traces", found.export)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield found, port
    finally:
        await runner.cleanup()


def otel_env(endpoint: str) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_SERVICE_NAME": "",  # each deployable names itself taskforge-<deployable>
        "OTEL_TRACES_SAMPLER": "parentbased_always_on",
        "TASKFORGE_LOG_FORMAT": "json",
    }


async def submit(session: aiohttp.ClientSession, api: str, body: dict[str, Any]) -> dict[str, Any]:
    async with session.post(f"{api}/v1/jobs", json=body) as response:
        assert response.status == 202, await response.text()
        job: dict[str, Any] = await response.json()
        return job


async def scrape(session: aiohttp.ClientSession, port: int) -> dict[str, Any]:
    async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
        assert response.status == 200
        text = await response.text()
    return {family.name: family for family in text_string_to_metric_families(text)}


def sample(families: dict[str, Any], family: str, name: str, **labels: str) -> float | None:
    for found in families[family].samples:
        if found.name == name and all(found.labels.get(k) == v for k, v in labels.items()):
            return float(found.value)
    return None


def one(spans: list[Exported], name: str) -> Exported:
    matching = [s for s in spans if s.span.name == name]
    assert len(matching) == 1, [(s.service, s.span.name) for s in spans]
    return matching[0]


async def test_one_trace_links_api_scheduler_and_worker(stores, clean, tmp_path, receiver):
    collector, port = receiver
    with running_system(stores, tmp_path, env=otel_env(f"http://127.0.0.1:{port}")) as system:
        await system.ready(WAIT)
        async with aiohttp.ClientSession() as session:
            ok = await submit(session, system.api_url, {"type": "ping", "payload": {"message": 1}})
            flaky = await submit(
                session,
                system.api_url,
                {"type": "ping", "payload": {"fail": True}, "max_attempts": 2},
            )
            done = await wait_finished(session, system.api_url, [ok["id"], flaky["id"]], WAIT)
            assert done[ok["id"]]["status"] == "completed"
            assert done[flaky["id"]]["status"] == "dead"
            trace_id = ok["traceparent"].split("-")[1]
            await collector.wait_for(
                trace_id,
                lambda spans: (
                    {s.span.name for s in spans}
                    >= {"POST /v1/jobs", "create default", "send default", "process default"}
                ),
            )
            retried = flaky["traceparent"].split("-")[1]
            await collector.wait_for(
                retried,
                lambda spans: sum(s.span.name == "process default" for s in spans) == 2,
            )
            await check_metrics(session, system)
        for name in list(system.procs):
            assert system.stop(name) == 0, system.procs[name].log.read_text()[-2000:]
        worker_log = system.procs["worker-0"].log.read_text()

    spans = collector.in_trace(trace_id)
    server, create = one(spans, "POST /v1/jobs"), one(spans, "create default")
    send, process = one(spans, "send default"), one(spans, "process default")
    assert [(s.service, s.span.kind) for s in (server, create, send, process)] == [
        ("taskforge-api", Span.SPAN_KIND_SERVER),
        ("taskforge-api", Span.SPAN_KIND_PRODUCER),
        ("taskforge-scheduler", Span.SPAN_KIND_PRODUCER),
        ("taskforge-worker", Span.SPAN_KIND_CONSUMER),
    ]
    # process → send → create → server: the worker's span descends from the api's.
    assert process.span.parent_span_id == send.span.span_id
    assert send.span.parent_span_id == create.span.span_id
    assert create.span.parent_span_id == server.span.span_id
    assert [(link.trace_id, link.span_id) for link in process.span.links] == [
        (send.span.trace_id, send.span.span_id)
    ]
    assert server.attributes["http.route"] == "/v1/jobs"
    assert server.attributes["http.response.status_code"] == 202
    attributes = process.attributes
    assert {key: attributes[key] for key in attributes if key.startswith("messaging.")} == {
        "messaging.system": "redis",
        "messaging.destination.name": "default",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.message.id": send.attributes["messaging.message.id"],
        "messaging.consumer.group.name": "workers",
        "messaging.client.id": attributes["messaging.client.id"],
    }
    assert (attributes["taskforge.job.id"], attributes["taskforge.job.type"]) == (ok["id"], "ping")
    assert attributes["taskforge.job.attempt"] == 1

    # The retry continues the same trace: a second send and process under the same create.
    again = collector.in_trace(retried)
    sends = [s for s in again if s.span.name == "send default"]
    processes = [s for s in again if s.span.name == "process default"]
    assert len(sends) == 2 and len({s.span.parent_span_id for s in sends}) == 1
    assert one(again, "create default").span.span_id == sends[0].span.parent_span_id
    assert {p.span.parent_span_id for p in processes} == {s.span.span_id for s in sends}
    assert sorted(p.attributes["taskforge.job.attempt"] for p in processes) == [1, 2]
    assert {p.span.status.code for p in processes} == {Status.STATUS_CODE_ERROR}
    assert all(any(e.name == "exception" for e in p.span.events) for p in processes)

    # The worker's JSON log line about the job carries the job and its trace.
    lines = [json.loads(line) for line in worker_log.splitlines() if line.startswith("{")]
    (finished,) = [
        line
        for line in lines
        if line.get("action") == "job.finish" and line.get("job_id") == ok["id"]
    ]
    assert (finished["queue"], finished["type"], finished["trace_id"]) == (
        "default",
        "ping",
        trace_id,
    )
    assert finished["span_id"] == process.span.span_id.hex()


async def check_metrics(session: aiohttp.ClientSession, system: System) -> None:
    """Every ops port serves the DESIGN names; each deployable's own figures are filled in."""
    api = await scrape(session, system.procs["api"].ops_port)
    worker = await scrape(session, system.procs["worker-0"].ops_port)
    for families in (api, worker):
        assert set(families) >= DESIGN_METRICS
    requests = "taskforge_http_requests_total"
    assert sample(api, "taskforge_http_requests", requests, route="/v1/jobs", status="202") == 2
    assert sample(api, "taskforge_jobs_submitted", "taskforge_jobs_submitted_total") == 2
    assert "taskforge_http_request_duration_seconds" in api
    attempts = sample(worker, "taskforge_job_attempts", "taskforge_job_attempts_total", type="ping")
    assert attempts == 3
    assert sample(worker, "taskforge_job_success", "taskforge_job_success_total") == 1
    failures = "taskforge_job_failure_total"
    assert sample(worker, "taskforge_job_failure", failures, outcome="retrying") == 1
    assert sample(worker, "taskforge_job_failure", failures, outcome="dead") == 1
    runtimes = "taskforge_job_runtime_seconds_count"
    assert sample(worker, "taskforge_job_runtime_seconds", runtimes, type="ping") == 3
    waits = "taskforge_job_time_in_queue_seconds_count"
    assert sample(worker, "taskforge_job_time_in_queue_seconds", waits, queue="default") == 3
    utilization = "taskforge_worker_utilization"
    assert sample(worker, utilization, utilization, queue="default") is not None
    # The backlog publisher runs every couple of seconds: wait for it to count the dead job.
    deadline = time.monotonic() + WAIT
    while True:
        scheduler = await scrape(session, system.procs["scheduler"].ops_port)
        assert set(scheduler) >= DESIGN_METRICS
        if sample(scheduler, "taskforge_dlq_count", "taskforge_dlq_count") == 1:
            break
        assert time.monotonic() < deadline, "taskforge_dlq_count never reached 1"
        await asyncio.sleep(0.2)
    dispatched = "taskforge_jobs_dispatched_total"
    assert sample(scheduler, "taskforge_jobs_dispatched", dispatched, queue="default") == 3
    batches = "taskforge_dispatch_batch_size_sum"
    assert sample(scheduler, "taskforge_dispatch_batch_size", batches) == 3


async def test_an_absent_collector_never_stops_jobs(stores, clean, tmp_path):
    nowhere = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with running_system(stores, tmp_path, env=otel_env(nowhere)) as system:
        await system.ready(WAIT)
        async with aiohttp.ClientSession() as session:
            jobs = [
                await submit(session, system.api_url, {"type": "ping", "payload": {"message": i}})
                for i in range(5)
            ]
            done = await wait_finished(session, system.api_url, [j["id"] for j in jobs], WAIT)
            assert all(job["status"] == "completed" for job in done.values())
        # Shutdown flushes within its bound even though every export fails.
        for name in list(system.procs):
            assert system.stop(name) == 0, system.procs[name].log.read_text()[-2000:]
