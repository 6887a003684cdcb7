"""The Python client: REST calls, transactional enqueue, and the CLI's tables."""

from __future__ import annotations

import asyncpg
import pytest

from taskforge import lifecycle
from taskforge.cli import main
from taskforge.client import Client, TaskforgeError, enqueue, init_connection
from taskforge.jobs import Status
from tests.integration.api_support import TOKEN, api, live_url

__all__ = ["api", "live_url"]


def client_for(api, token: str = TOKEN) -> Client:
    return Client(str(api.make_url("")), token)


async def test_rest_client_submits_lists_cancels_and_reports_errors(api):
    async with client_for(api) as client:
        job = await client.submit("ping", {"message": "hi"}, delay_seconds=600, priority=3)
        assert job["status"] == "pending" and job["priority"] == 3
        same = await client.submit(
            "ping", {"message": "hi"}, delay_seconds=600, priority=3, idempotency_key="once"
        )
        again = await client.submit(
            "ping", {"message": "hi"}, delay_seconds=600, priority=3, idempotency_key="once"
        )
        assert same["id"] == again["id"]
        batch = await client.submit_batch([{"type": "ping", "delay_seconds": 600}] * 3)
        assert batch["created"] == 3 and batch["results"][0]["job"]["status"] == "pending"
        lean = await client.submit_batch([{"type": "ping", "delay_seconds": 600}] * 2, minimal=True)
        assert lean["created"] == 2 and "job" not in lean["results"][0]
        assert (await client.get(job["id"]))["id"] == job["id"]
        ids = [j["id"] async for j in client.iter_jobs(page_size=2, status=["pending"])]
        assert len(ids) == len(set(ids)) == 7
        cancelled = await client.cancel(job["id"])
        assert cancelled["status"] == "cancelled"
        assert (await client.wait(job["id"], timeout=5))["status"] == "cancelled"
        assert [e["to_status"] for e in await client.events(job["id"])] == ["pending", "cancelled"]
        with pytest.raises(TaskforgeError) as missing:
            await client.get("0190f0f0-0000-7000-8000-000000000000")
        assert missing.value.status == 404 and missing.value.code == "job_not_found"
        moved = await client.move_to_dlq(same["id"], "bad input")
        assert moved["status"] == "dead"
        assert [j["id"] for j in (await client.dlq())["jobs"]] == [same["id"]]
        assert (await client.replay_matching(error="bad", dry_run=True))["matched"] == 1
        assert (await client.replay(same["id"]))["status"] == "pending"
        assert (await client.pause("default"))["paused"] is True
        assert (await client.set_concurrency("default", 3))["concurrency"] == 3
        assert [q["name"] for q in await client.queues()] == ["default"]
        await client.put_schedule("nightly", "0 3 * * *", {"type": "ping"})
        assert [s["name"] for s in await client.schedules()] == ["nightly"]
        await client.delete_schedule("nightly")
    async with client_for(api, token="wrong") as stranger:
        with pytest.raises(TaskforgeError) as refused:
            await stranger.queues()
    assert refused.value.status == 401


async def test_enqueue_exists_only_if_the_transaction_commits(pool):
    async with pool.acquire() as conn:
        async with conn.transaction():
            kept = await enqueue(conn, "ping", {"n": 1}, queue="mail", delay_seconds=60)
        with pytest.raises(RuntimeError):
            async with conn.transaction():
                dropped = await enqueue(conn, "ping", {"n": 2})
                raise RuntimeError("the caller's work failed")
        assert (await lifecycle.get_job(conn, kept.id)).status is Status.PENDING
        assert await lifecycle.get_job(conn, dropped.id) is None
        events = await lifecycle.job_events(conn, kept.id)
        assert [(e.to_status, e.actor) for e in events] == [("pending", "api")]


async def test_enqueue_validates_and_honours_idempotency_keys(pool):
    async with pool.acquire() as conn:
        with pytest.raises(ValueError, match="priority"):
            await enqueue(conn, "ping", priority=1000)
        first = await enqueue(conn, "ping", {"a": 1}, idempotency_key="k")
        assert (await enqueue(conn, "ping", {"a": 1}, idempotency_key="k")).id == first.id
        with pytest.raises(ValueError, match="already used"):
            await enqueue(conn, "ping", {"a": 2}, idempotency_key="k")


async def test_enqueue_explains_a_connection_without_the_jsonb_codec(stores, clean):
    plain = await asyncpg.connect(stores.postgres_url)
    try:
        with pytest.raises(TypeError, match="init_connection"):
            await enqueue(plain, "ping", {"a": 1})
        await init_connection(plain)
        assert (await enqueue(plain, "ping", {"a": 1})).payload == {"a": 1}
    finally:
        await plain.close()


def run_cli(capsys, url: str, *argv: str) -> tuple[int, str, str]:
    code = main([*argv, "--url", url, "--token", TOKEN])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_submits_lists_cancels_and_replays_with_tables(live_url, capsys):
    code, out, _ = run_cli(
        capsys,
        live_url,
        "jobs",
        "submit",
        "ping",
        "--payload",
        '{"message": "x"}',
        "--delay",
        "600",
    )
    assert code == 0 and "pending" in out
    job_id = out.split()[1]
    code, out, _ = run_cli(capsys, live_url, "jobs", "ls")
    header, row = out.splitlines()[:2]
    assert header.split() == [
        "ID",
        "STATUS",
        "TYPE",
        "QUEUE",
        "ATTEMPTS",
        "CREATED_AT",
        "LAST_ERROR",
    ]
    assert row.split()[:4] == [job_id, "pending", "ping", "default"]
    code, out, _ = run_cli(capsys, live_url, "jobs", "get", job_id, "--events")
    assert code == 0 and "FROM_STATUS" in out
    assert run_cli(capsys, live_url, "jobs", "cancel", job_id)[1].strip() == f"{job_id}: cancelled"
    code, _, err = run_cli(capsys, live_url, "jobs", "cancel", job_id)
    assert code == 1 and "job_not_cancellable" in err
    code, out, _ = run_cli(capsys, live_url, "dlq", "ls")
    assert code == 0 and out.split()[:2] == ["ID", "TYPE"]
    code, out, _ = run_cli(capsys, live_url, "dlq", "replay", "--all", "--dry-run")
    assert code == 0 and "0 dead jobs match; dry run" in out
    code, _, err = run_cli(capsys, live_url, "dlq", "replay")
    assert code == 1 and "--all" in err
    code, out, _ = run_cli(capsys, live_url, "queues")
    assert code == 0 and out.splitlines()[1].split()[0] == "default"
    code, out, _ = run_cli(capsys, live_url, "queues", "pause", "mail")
    assert code == 0 and out.strip() == "mail: paused"
    # The common options may come before the action too (the queues command takes them).
    code = main(["queues", "--url", live_url, "--token", TOKEN, "resume", "mail"])
    assert code == 0 and capsys.readouterr().out.strip() == "mail: resumed"
    code = main(["queues", "--json", "--url", live_url, "--token", TOKEN, "ls"])
    assert code == 0 and '"name": "mail"' in capsys.readouterr().out
    code, out, _ = run_cli(capsys, live_url, "jobs", "get", job_id, "--json")
    assert code == 0 and '"status": "cancelled"' in out


def test_cli_says_when_the_api_is_unreachable(capsys):
    assert main(["jobs", "ls", "--url", "http://127.0.0.1:9"]) == 2
    assert "cannot reach the API" in capsys.readouterr().err
