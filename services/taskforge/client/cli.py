"""``taskforge jobs|dlq|queues``: the API from a terminal, as readable tables (or ``--json``).

The API is ``TASKFORGE_API_URL`` (default http://127.0.0.1:8080) with the bearer token
``TASKFORGE_API_TOKEN``; ``--url`` and ``--token`` override them. Exit status: 0 done,
1 the API refused (its error is printed), 2 the API could not be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiohttp

from taskforge.client.rest import Client, TaskforgeError
from taskforge.config import Settings

Action = Callable[[Client, argparse.Namespace], Awaitable[Any]]
JOB_COLUMNS = ("id", "status", "type", "queue", "attempts", "created_at", "last_error")


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str], width: int = 48) -> str:
    """Rows as an aligned text table; long cells are cut to ``width`` characters."""

    def cell(value: Any) -> str:
        text = "-" if value is None or value == "" else str(value)
        text = " ".join(text.split())  # one line per row, even for tracebacks
        return text if len(text) <= width else text[: width - 1] + "…"

    cells = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def _show(args: argparse.Namespace, data: Any, render: Callable[[Any], str]) -> None:
    print(json.dumps(data, indent=2) if args.json else render(data))


def _job_detail(job: dict[str, Any]) -> str:
    keys = (
        "id",
        "status",
        "type",
        "queue",
        "priority",
        "attempts",
        "max_attempts",
        "run_at",
        "created_at",
        "started_at",
        "finished_at",
        "worker",
        "cancel_requested",
        "last_error",
        "payload",
        "result",
    )
    return "\n".join(
        f"{k + ':':<17}{json.dumps(job[k]) if k in ('payload', 'result') else job.get(k)}"
        for k in keys
    )


# -- actions ------------------------------------------------------------------------------


async def jobs_submit(client: Client, args: argparse.Namespace) -> None:
    try:
        payload = json.loads(args.payload)
    except json.JSONDecodeError as exc:
        raise TaskforgeError(0, "invalid_payload", f"--payload is not JSON: {exc}") from None
    job = await client.submit(
        args.type,
        payload,
        queue=args.queue,
        priority=args.priority,
        max_attempts=args.max_attempts,
        timeout_seconds=args.timeout,
        delay_seconds=args.delay,
        idempotency_key=args.key,
    )
    if args.wait:
        job = await client.wait(job["id"])
    _show(args, job, _job_detail)


async def jobs_get(client: Client, args: argparse.Namespace) -> None:
    job = await client.get(args.id)
    if args.events:
        events = await client.events(args.id)
        _show(
            args,
            {"job": job, "events": events},
            lambda d: (
                _job_detail(d["job"])
                + "\n\n"
                + table(
                    d["events"], ("at", "from_status", "to_status", "attempt", "actor", "error")
                )
            ),
        )
    else:
        _show(args, job, _job_detail)


async def jobs_ls(client: Client, args: argparse.Namespace) -> None:
    filters = {"status": args.status, "queue": args.queue, "type": args.type}
    page = await client.list(limit=args.limit, cursor=args.cursor, **filters)
    _show(
        args,
        page,
        lambda p: (
            table(p["jobs"], JOB_COLUMNS)
            + (f"\n(more: --cursor {p['next_cursor']})" if p["next_cursor"] else "")
        ),
    )


async def jobs_cancel(client: Client, args: argparse.Namespace) -> None:
    job = await client.cancel(args.id)
    _show(
        args,
        job,
        lambda j: (
            f"{j['id']}: {j['status']}"
            + (" (its worker was told to stop it)" if j["status"] == "running" else "")
        ),
    )


async def jobs_retry(client: Client, args: argparse.Namespace) -> None:
    job = await client.retry(args.id)
    _show(args, job, lambda j: f"{j['id']}: {j['status']}")


async def dlq_ls(client: Client, args: argparse.Namespace) -> None:
    filters = {"queue": args.queue, "type": args.type, "error": args.error}
    page = await client.dlq(limit=args.limit, cursor=args.cursor, **filters)
    columns = ("id", "type", "queue", "attempts", "finished_at", "last_error")
    _show(
        args,
        page,
        lambda p: (
            table(p["jobs"], columns)
            + (f"\n(more: --cursor {p['next_cursor']})" if p["next_cursor"] else "")
        ),
    )


async def dlq_replay(client: Client, args: argparse.Namespace) -> None:
    if args.id:
        job = await client.replay(args.id)
        _show(args, job, lambda j: f"{j['id']}: {j['status']}")
        return
    match = {"type": args.type, "queue": args.queue, "error": args.error}
    if not args.all and not any(match.values()):
        raise TaskforgeError(
            0,
            "no_filter",
            "give a job id, a filter (--type/--queue/--error) or --all to replay every dead job",
        )
    result = await client.replay_matching(dry_run=args.dry_run, **match)
    _show(
        args,
        result,
        lambda r: (
            f"{r['matched']} dead jobs match"
            + ("; dry run, nothing replayed" if r["dry_run"] else f"; {r['replayed']} replayed")
        ),
    )


async def queues_ls(client: Client, args: argparse.Namespace) -> None:
    queues = await client.queues()
    rows = [
        {
            **q,
            **q["counts"],
            "paused": "yes" if q["paused"] else "",
            "per_min": q["throughput_per_minute"],
            "oldest_s": q["oldest_age_seconds"],
        }
        for q in queues
    ]
    columns = (
        "name",
        "paused",
        "concurrency",
        "backlog",
        "oldest_s",
        "per_min",
        "pending",
        "queued",
        "running",
        "retrying",
        "completed",
        "dead",
        "cancelled",
    )
    _show(args, queues, lambda _: table(rows, columns))


async def queues_pause(client: Client, args: argparse.Namespace) -> None:
    queue = await client.pause(args.name)
    _show(args, queue, lambda q: f"{q['name']}: paused")


async def queues_resume(client: Client, args: argparse.Namespace) -> None:
    queue = await client.resume(args.name)
    _show(args, queue, lambda q: f"{q['name']}: resumed")


# -- wiring -------------------------------------------------------------------------------


def _handler(action: Action) -> Callable[[Settings, argparse.Namespace], int]:
    def run(settings: Settings, args: argparse.Namespace) -> int:
        async def go() -> int:
            async with Client(args.url, args.token) as client:
                await action(client, args)
            return 0

        try:
            return asyncio.run(go())
        except TaskforgeError as exc:
            print(f"taskforge: {exc.code}: {exc.message}", file=sys.stderr)
            return 1
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            print(
                f"taskforge: cannot reach the API at {args.url or 'TASKFORGE_API_URL'}: {exc}",
                file=sys.stderr,
            )
            return 2

    return run


def _common(
    parser: argparse.ArgumentParser, action: Action, nested: bool = False
) -> argparse.ArgumentParser:
    """Add --url, --token and --json, and run ``action``.

    ``nested``: the parser is an action under a command that takes them too (``queues
    --url … pause``); its own options then default to nothing at all, since argparse lets a
    subparser's defaults overwrite what was given before the action.
    """
    unset: dict[str, Any] = {"default": argparse.SUPPRESS} if nested else {}
    parser.add_argument("--url", help="API base URL (default: TASKFORGE_API_URL)", **unset)
    parser.add_argument("--token", help="API token (default: TASKFORGE_API_TOKEN)", **unset)
    parser.add_argument("--json", action="store_true", help="print the API's JSON", **unset)
    parser.set_defaults(handler=_handler(action))
    return parser


def _filters(parser: argparse.ArgumentParser, status: bool = True) -> None:
    if status:
        parser.add_argument("--status", help="state(s), comma-separated, e.g. pending,running")
    parser.add_argument("--queue")
    parser.add_argument("--type")
    parser.add_argument("--limit", type=int, default=50, help="page size (default 50)")
    parser.add_argument("--cursor", help="next page: the cursor printed under the last one")


def add_commands(commands: Any) -> None:
    """Add ``jobs``, ``dlq`` and ``queues`` to the ``taskforge`` command."""
    jobs = commands.add_parser("jobs", help="submit, inspect, list and cancel jobs via the API")
    sub = jobs.add_subparsers(dest="jobs_command", metavar="ACTION", required=True)
    submit = _common(sub.add_parser("submit", help="submit a job"), jobs_submit)
    submit.add_argument("type", help="job type, e.g. ping")
    submit.add_argument("--payload", default="{}", help="JSON object (default {})")
    submit.add_argument("--queue")
    submit.add_argument("--priority", type=int)
    submit.add_argument("--max-attempts", type=int)
    submit.add_argument("--timeout", type=float, help="seconds per attempt")
    submit.add_argument("--delay", type=float, help="seconds before it may run")
    submit.add_argument("--key", help="Idempotency-Key")
    submit.add_argument("--wait", action="store_true", help="wait until it is finished")
    get = _common(sub.add_parser("get", help="show a job"), jobs_get)
    get.add_argument("id")
    get.add_argument("--events", action="store_true", help="also show its history")
    _filters(_common(sub.add_parser("ls", help="list jobs, newest first"), jobs_ls))
    _common(sub.add_parser("cancel", help="cancel a job"), jobs_cancel).add_argument("id")
    _common(sub.add_parser("retry", help="run a finished job again"), jobs_retry).add_argument("id")

    dlq = commands.add_parser("dlq", help="list and replay dead jobs via the API")
    sub = dlq.add_subparsers(dest="dlq_command", metavar="ACTION", required=True)
    ls = _common(sub.add_parser("ls", help="list dead jobs, newest first"), dlq_ls)
    _filters(ls, status=False)
    ls.add_argument("--error", help="substring of the error (case-insensitive)")
    replay = _common(
        sub.add_parser("replay", help="replay one dead job or all matching"), dlq_replay
    )
    replay.add_argument("id", nargs="?", help="a dead job's id (else: by filter)")
    replay.add_argument("--type")
    replay.add_argument("--queue")
    replay.add_argument("--error", help="substring of the error (case-insensitive)")
    replay.add_argument("--all", action="store_true", help="every dead job")
    replay.add_argument("--dry-run", action="store_true", help="only count what would go")

    queues = _common(
        commands.add_parser("queues", help="queues and their stats via the API"), queues_ls
    )
    sub = queues.add_subparsers(dest="queues_command", metavar="ACTION")
    _common(sub.add_parser("ls", help="list queues (the default)"), queues_ls, nested=True)
    pause = sub.add_parser("pause", help="stop dispatching a queue")
    _common(pause, queues_pause, nested=True).add_argument("name")
    resume = sub.add_parser("resume", help="dispatch a queue again")
    _common(resume, queues_resume, nested=True).add_argument("name")
