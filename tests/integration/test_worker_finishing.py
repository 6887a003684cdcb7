"""The finisher records what it can, whatever PostgreSQL refuses, and a worker whose
PostgreSQL is down at shutdown still exits within its budget, saying what it left."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from taskforge import lifecycle, store, streams
from taskforge.jobs import Status
from taskforge.lanes import LaneClient
from taskforge.lifecycle import ClaimedJob, Outcome
from taskforge.scheduler.dispatcher import Dispatcher, listen
from taskforge.worker import finishing
from taskforge.worker.consumer import Worker
from taskforge.worker.execution import Running
from taskforge.worker.finishing import Finisher, FinishItem
from taskforge.worker.registry import Registry
from tests.conftest import Stores, make_settings
from tests.integration.helpers import submit, wait_status

ACTOR = "worker:finishing-test"


class Outage:
    """A TCP proxy in front of PostgreSQL that a test can cut (connections dropped, new ones
    refused: PostgreSQL is down) or freeze (nothing comes back: PostgreSQL hangs), and
    restore."""

    def __init__(self, url: str) -> None:
        self._parts = urlsplit(url)
        self._target = (self._parts.hostname or "127.0.0.1", self._parts.port or 5432)
        self._server: asyncio.Server | None = None
        self._serving: set[asyncio.Task[None]] = set()
        self._flowing = asyncio.Event()
        self.port = 0

    @property
    def url(self) -> str:
        netloc = f"{self._parts.username}@127.0.0.1:{self.port}"
        return urlunsplit(self._parts._replace(netloc=netloc))

    async def restore(self) -> None:
        self._flowing.set()
        if self._server is None or not self._server.is_serving():
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
            self.port = self._server.sockets[0].getsockname()[1]

    def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._serving:
            task.cancel()

    def freeze(self) -> None:
        self._flowing.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._serving.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
            try:
                await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
            finally:
                up_writer.transport.abort()
        except (OSError, asyncio.CancelledError):
            pass  # the connection is dropped either way
        finally:
            writer.transport.abort()
            self._serving.discard(task)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        while data := await source.read(65536):
            await self._flowing.wait()
            sink.write(data)
            await sink.drain()
        sink.transport.abort()


@pytest.fixture
async def outage(stores: Stores, clean: None) -> AsyncIterator[Outage]:
    proxy = Outage(stores.postgres_url)
    await proxy.restore()
    yield proxy
    proxy.cut()


@pytest.fixture
async def proxied_pool(outage: Outage) -> AsyncIterator[asyncpg.Pool]:
    pool = await store.create_pool(outage.url, max_size=4)
    yield pool
    pool.terminate()


@pytest.fixture
def short_shutdown(monkeypatch: pytest.MonkeyPatch) -> float:
    monkeypatch.setattr(finishing, "SHUTDOWN_SECONDS", 1.0)
    return 1.0


async def claimed_jobs(pool: asyncpg.Pool, redis: LaneClient, count: int) -> list[ClaimedJob]:
    """``count`` jobs dispatched to real stream entries, read and claimed as a worker would."""
    jobs = [await submit(pool, "ping") for _ in range(count)]
    await streams.ensure_groups(redis, ["default"])
    messages = [("default", streams.encode(j.id, "ping", "default", 1, 0, 30.0, {})) for j in jobs]
    entry_of = dict(zip([j.id for j in jobs], await streams.send(redis, messages), strict=True))
    async with pool.acquire() as conn, conn.transaction():
        due = await lifecycle.select_due(conn, count, [], lifecycle.new_dispatch_lock())
        await lifecycle.mark_queued(conn, due, [entry_of[d.id] for d in due])
    assert len(await streams.read(redis, ["default"], "test", count, block_ms=100)) == count
    async with pool.acquire() as conn:
        claimed = await lifecycle.claim(conn, [(j.id, entry_of[j.id]) for j in jobs], ACTOR, 30)
    assert len(claimed) == count
    order = [j.id for j in jobs]
    return sorted(claimed, key=lambda c: order.index(c.id))


def completed(job: ClaimedJob, result_json: str = '{"ok": true}') -> FinishItem:
    outcome = Outcome(job.id, job.attempt, Status.COMPLETED, result_json=result_json)
    return FinishItem(outcome, job.queue, job.stream_id, job)


async def unacked(redis: LaneClient) -> int:
    summary = await redis.xpending(streams.stream_key("default"), streams.GROUP)
    return int(summary["pending"])


async def rows(pool: asyncpg.Pool, jobs: list[ClaimedJob]) -> list[tuple[str, object, object]]:
    async with pool.acquire() as conn:
        found = {
            r["id"]: (r["status"], r["result"], r["last_error"])
            for r in await conn.fetch(
                "SELECT id, status, result, last_error FROM jobs WHERE id = ANY($1::uuid[])",
                [j.id for j in jobs],
            )
        }
    return [found[j.id] for j in jobs]


def finisher_for(pool: asyncpg.Pool, redis: LaneClient, errors: list[str]) -> Finisher:
    return Finisher(pool, redis, ACTOR, lambda where, exc, _: errors.append(f"{where}: {exc!r}"))


async def shut_down(finisher: Finisher, running: asyncio.Task[None], budget: float) -> float:
    """The worker's shutdown: close, wait for the finisher's run, then flush_all (within
    ``budget`` and some slack); the seconds it took."""
    started = time.monotonic()
    async with asyncio.timeout(budget + 8):
        finisher.close()
        await asyncio.wait({running}, timeout=15.0)
        await finisher.flush_all()
    return time.monotonic() - started


def actions(caplog: pytest.LogCaptureFixture) -> list[tuple[str, dict[str, object]]]:
    return [(r.__dict__.get("action", ""), r.__dict__) for r in caplog.records]


async def test_an_outcome_postgres_refuses_is_recorded_dead_and_its_batch_is_recorded(
    pool, redis_client, caplog
):
    jobs = await claimed_jobs(pool, redis_client, 5)
    errors: list[str] = []
    finisher = finisher_for(pool, redis_client, errors)
    for job in jobs:
        # The finish casts the result to jsonb: PostgreSQL refuses the whole statement.
        finisher.add(completed(job, "{not json" if job is jobs[3] else '{"ok": true}'))
    caplog.set_level(logging.INFO, "taskforge.worker")
    async with asyncio.timeout(10):
        assert await finisher.flush()
    found = await rows(pool, jobs)
    assert [status for status, _, _ in found] == ["completed"] * 3 + ["dead", "completed"]
    assert [result for _, result, _ in found] == [{"ok": True}] * 3 + [None, {"ok": True}]
    assert str(found[3][2]).startswith(
        "the worker could not record its outcome (completed): "
        "InvalidTextRepresentationError: invalid input syntax for type json"
    )
    assert await unacked(redis_client) == 0
    assert finisher.held == 0 and errors == []
    [refused] = [extra for action, extra in actions(caplog) if action == "job.finish.refused"]
    assert refused["job_id"] == str(jobs[3].id) and refused["levelno"] == logging.ERROR
    # The dead job's notice reaches the dead-letter stream like any other.
    [(_, notice)] = await redis_client.xrange(streams.DLQ_STREAM)
    assert str(jobs[3].id).encode() in notice[streams.FIELD]


async def test_an_outcome_refused_even_as_dead_is_dropped_and_the_rest_recorded(
    pool, redis_client, caplog
):
    jobs = await claimed_jobs(pool, redis_client, 4)
    refused = jobs[1]
    # A trigger refusing every change to one job: "an error raised inside the function".
    async with pool.acquire() as conn:
        await conn.execute(
            f"""
            CREATE FUNCTION finishing_test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'no change to this job'; END $$;
            CREATE TRIGGER finishing_test_refuse BEFORE UPDATE ON jobs FOR EACH ROW
            WHEN (OLD.id = '{refused.id}') EXECUTE FUNCTION finishing_test_refuse();
            """
        )
    try:
        errors: list[str] = []
        finisher = finisher_for(pool, redis_client, errors)
        for job in jobs:
            finisher.add(completed(job))
        async with asyncio.timeout(10):
            assert await finisher.flush()
    finally:
        async with pool.acquire() as conn:
            await conn.execute(
                "DROP TRIGGER finishing_test_refuse ON jobs; DROP FUNCTION finishing_test_refuse()"
            )
    assert [status for status, _, _ in await rows(pool, jobs)] == [
        "completed",
        "running",  # its lease lapses and the reaper rescues it
        "completed",
        "completed",
    ]
    assert await unacked(redis_client) == 1  # as if its worker had died
    assert finisher.held == 0 and errors == []
    [dropped] = [extra for action, extra in actions(caplog) if action == "job.finish.dropped"]
    assert dropped["job_id"] == str(refused.id)
    assert "RaiseError: no change to this job" in str(dropped["error"])


async def test_a_lost_connection_is_retried_not_taken_for_a_refusal(
    pool, proxied_pool, outage, redis_client
):
    jobs = await claimed_jobs(pool, redis_client, 3)
    errors: list[str] = []
    finisher = finisher_for(proxied_pool, redis_client, errors)
    for job in jobs:
        finisher.add(completed(job))
    outage.cut()
    flushing = asyncio.create_task(finisher.flush())
    await asyncio.sleep(0.5)
    assert not flushing.done() and finisher.held == 3
    await outage.restore()
    async with asyncio.timeout(10):
        await flushing
    assert [status for status, _, _ in await rows(pool, jobs)] == ["completed"] * 3
    assert errors and all(e.startswith("finish: ") for e in errors)


async def test_a_hand_back_that_failed_is_kept_and_made_on_the_retry(
    pool, proxied_pool, outage, redis_client
):
    [job] = await claimed_jobs(pool, redis_client, 1)
    errors: list[str] = []
    finisher = finisher_for(proxied_pool, redis_client, errors)
    finisher.handbacks.append((job.id, job.attempt, job.queue, job.stream_id))
    outage.cut()

    async def back_soon() -> None:
        await asyncio.sleep(0.3)
        await outage.restore()

    restoring = asyncio.create_task(back_soon())
    async with asyncio.timeout(15):
        await finisher.flush_all()
    await restoring
    assert errors and errors[0].startswith("shutdown: ")
    assert [status for status, _, _ in await rows(pool, [job])] == ["pending"]
    assert finisher.handbacks == []
    assert await unacked(redis_client) == 0


async def test_shutdown_with_postgres_down_gives_up_at_the_deadline_saying_what_is_left(
    pool, proxied_pool, outage, redis_client, short_shutdown, caplog
):
    jobs = await claimed_jobs(pool, redis_client, 3)
    errors: list[str] = []
    finisher = finisher_for(proxied_pool, redis_client, errors)
    finisher.add(completed(jobs[0]))
    finisher.add(completed(jobs[1]))
    finisher.handbacks.append((jobs[2].id, jobs[2].attempt, jobs[2].queue, jobs[2].stream_id))
    outage.cut()
    running = asyncio.create_task(finisher.run())
    await asyncio.sleep(0.3)
    took = await shut_down(finisher, running, short_shutdown)
    assert took < short_shutdown + 4  # not 60 s; slack for a loaded machine
    assert running.done()
    [left] = [e for a, e in actions(caplog) if a == "worker.shutdown.unrecorded"]
    assert (left["levelno"], left["outcomes"], left["handbacks"]) == (logging.ERROR, 2, 1)
    assert "2 outcomes not recorded and 1 attempts not handed back" in str(left["message"])
    assert [status for status, _, _ in await rows(pool, jobs)] == ["running"] * 3


async def test_shutdown_with_postgres_hanging_cuts_short_the_finish_under_way(
    pool, proxied_pool, outage, redis_client, short_shutdown, caplog
):
    [job] = await claimed_jobs(pool, redis_client, 1)
    finisher = finisher_for(proxied_pool, redis_client, [])
    outage.freeze()
    finisher.add(completed(job))
    running = asyncio.create_task(finisher.run())
    await asyncio.sleep(0.3)
    assert finisher.held == 1  # its finish is under way, made before any deadline
    took = await shut_down(finisher, running, short_shutdown)
    # Not the pool's command timeout (60 s): the connection is closed, not reset.
    assert took < short_shutdown + 4  # not 60 s; slack for a loaded machine
    [left] = [e for a, e in actions(caplog) if a == "worker.shutdown.unrecorded"]
    assert (left["outcomes"], left["handbacks"]) == (1, 0)


async def test_a_worker_whose_postgres_is_down_exits_within_its_shutdown_budget(
    pool, proxied_pool, outage, redis_client, stores, short_shutdown, caplog
):
    settings = make_settings(stores, shutdown_grace=0.5)
    registry = Registry()
    release = asyncio.Event()

    @registry.job("hold")
    async def hold(ctx, payload):
        await release.wait()
        return "done"

    @registry.job("block")
    async def block(ctx, payload):
        await asyncio.Event().wait()

    held = await submit(pool, "hold")
    blocked = await submit(pool, "block")
    stop = asyncio.Event()
    dispatcher = Dispatcher(pool, redis_client, batch_size=10, poll_interval=0.1)
    worker = Worker(proxied_pool, redis_client, registry, settings, "finishing-test")
    tasks = [
        asyncio.create_task(dispatcher.run(stop)),
        asyncio.create_task(listen(settings.postgres_url, dispatcher, stop)),
    ]
    working = asyncio.create_task(worker.run(stop))
    try:
        await wait_status(pool, held.id, "running")
        await wait_status(pool, blocked.id, "running")
        outage.cut()
        release.set()  # its outcome cannot be recorded now
        await asyncio.sleep(0.3)
        started = time.monotonic()
        stop.set()
        async with asyncio.timeout(30):
            await working
        # Drain (the grace, then up to 5 s for cancelled handlers, instant here), then the
        # finisher's budget; generous slack for a loaded machine, far from 15 s + forever.
        assert time.monotonic() - started < settings.shutdown_grace + short_shutdown + 3
    finally:
        stop.set()
        working.cancel()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
    [left] = [e for a, e in actions(caplog) if a == "worker.shutdown.unrecorded"]
    assert (left["outcomes"], left["handbacks"]) == (1, 1)
    async with pool.acquire() as conn:
        statuses = {
            r["id"]: r["status"]
            for r in await conn.fetch(
                "SELECT id, status FROM jobs WHERE id = ANY($1::uuid[])", [held.id, blocked.id]
            )
        }
    assert statuses == {held.id: "running", blocked.id: "running"}  # for the reaper


async def test_a_heartbeat_against_a_hanging_postgres_ends_within_its_interval(
    pool, proxied_pool, outage, redis_client, stores
):
    """Its renewal is cut short at the interval, and the connection closed rather than reset
    (the pool's reset would wait its command timeout, 60 s, with no heartbeat meanwhile)."""
    settings = make_settings(stores, visibility_timeout=1.5)
    [job] = await claimed_jobs(pool, redis_client, 1)
    worker = Worker(proxied_pool, redis_client, Registry(), settings, "finishing-test")
    worker.running[job.id] = Running(job, lease_deadline=time.monotonic() + 1.5)
    await worker.heartbeat_once()  # a connection made, while PostgreSQL answers
    outage.freeze()
    started = time.monotonic()
    async with asyncio.timeout(10):
        await worker.heartbeat_once()
    assert time.monotonic() - started < settings.heartbeat_interval + 4.0  # not 60 s


async def test_an_ack_that_fails_after_the_finish_is_retried_alone(
    pool, redis_client, stores, caplog
):
    """The finish commits and the XACK fails (here the worker's Redis user loses XACK): the
    whole batch used to be finished again, fenced out as already recorded, and its dead-letter
    notices and log lines were lost. Now only the ack waits for the next try."""
    jobs = await claimed_jobs(pool, redis_client, 2)
    user, password = f"tf-finisher-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    await redis_client.execute_command(
        "ACL", "SETUSER", user, "on", f">{password}", "~*", "&*", "+@all", "-xack"
    )
    parts = urlsplit(stores.redis_url)
    netloc = f"{user}:{password}@{parts.hostname}:{parts.port}"
    client = streams.connect(urlunsplit(parts._replace(netloc=netloc)))
    errors: list[str] = []
    caplog.set_level(logging.INFO, "taskforge.worker")
    try:
        finisher = finisher_for(pool, client, errors)
        finisher.add(completed(jobs[0]))
        dead = Outcome(jobs[1].id, jobs[1].attempt, Status.DEAD, error="gave up")
        finisher.add(FinishItem(dead, jobs[1].queue, jobs[1].stream_id, jobs[1]))
        async with asyncio.timeout(10):
            assert await finisher.flush()
        assert [status for status, _, _ in await rows(pool, jobs)] == ["completed", "dead"]
        assert finisher.held == 0 and len(finisher.unacked) == 2
        assert [e.split(":")[0] for e in errors] == ["ack"]
        assert await unacked(redis_client) == 2
        [(_, notice)] = await redis_client.xrange(streams.DLQ_STREAM)
        assert str(jobs[1].id).encode() in notice[streams.FIELD]
        finished = {str(e["job_id"]) for a, e in actions(caplog) if a == "job.finish"}
        assert finished == {str(j.id) for j in jobs}
        await redis_client.execute_command("ACL", "SETUSER", user, "+xack")
        async with asyncio.timeout(10):
            await finisher.flush_all()  # the next try: at the latest, at shutdown
        assert finisher.unacked == [] and await unacked(redis_client) == 0
    finally:
        await client.aclose()
        await redis_client.execute_command("ACL", "DELUSER", user)
