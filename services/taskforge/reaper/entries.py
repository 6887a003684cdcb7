"""The reaper's stream commands: reclaim idle entries (XAUTOCLAIM), find entries Redis lost,
trim streams, and remove consumers that left.

Like :mod:`taskforge.streams`, every per-entry operation takes a batch and makes one round
trip. Nothing here touches PostgreSQL; :mod:`taskforge.lifecycle.rescue` decides what a
reclaimed entry means for its job.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from taskforge.streams import FIELD, GROUP, queue_of, stream_key


def parse_id(stream_id: str | bytes) -> tuple[int, int]:
    """A stream id as (milliseconds, sequence), the order Redis gives ids."""
    text = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


@dataclass(frozen=True)
class Reclaimed:
    """An entry the reaper took over with XAUTOCLAIM.

    ``deliveries`` counts deliveries before this claim: to workers, and to reapers that died
    before finishing with it. ``data`` is None for an entry without a ``JobMessage`` field.
    """

    queue: str
    stream_id: str
    data: bytes | None
    deliveries: int


async def reclaim_idle(
    client: aioredis.Redis, queue: str, consumer: str, min_idle_ms: int, count: int = 100
) -> AsyncIterator[list[Reclaimed]]:
    """XAUTOCLAIM a queue's entries idle for ``min_idle_ms`` to ``consumer``, page by page.

    Follows the cursor to the end. Each page is yielded before the next is claimed so the
    caller settles it first. XAUTOCLAIM hands every entry to exactly one claimer, so several
    reapers can run this at once. A missing stream or group yields nothing.
    """
    key = stream_key(queue)
    cursor = "0-0"
    while True:
        try:
            reply: Any = await client.execute_command(  # type: ignore[no-untyped-call]
                "XAUTOCLAIM", key, GROUP, consumer, min_idle_ms, cursor, "COUNT", count
            )
        except ResponseError as exc:
            if "NOGROUP" in str(exc):
                return
            raise
        # Redis 6.2 replies [cursor, entries]; 7 adds a third element, the ids of pending
        # entries that no longer exist, which it has already removed from the PEL. 6.2
        # instead claims such entries and returns them as nil: they are acked below.
        cursor = _text(reply[0])
        claimed: list[tuple[str, bytes | None]] = []
        missing = False
        for entry in reply[1] or []:
            entry_id, fields = (entry[0], entry[1]) if entry else (None, None)
            if entry_id is None:
                missing = True
                continue
            if isinstance(fields, list | tuple):
                fields = dict(zip(fields[::2], fields[1::2], strict=True))
            claimed.append((_text(entry_id), (fields or {}).get(FIELD)))
        if missing:
            await _ack_vanished(client, key, consumer)
        if claimed:
            pipe = client.pipeline(transaction=False)
            for entry_id, _ in claimed:
                pipe.xpending_range(key, GROUP, min=entry_id, max=entry_id, count=1)
            counts = await pipe.execute()
            page = [
                Reclaimed(queue, entry_id, data, int(found[0]["times_delivered"]) - 1)
                for (entry_id, data), found in zip(claimed, counts, strict=True)
                if found  # acked by its worker since the claim: nothing left to settle
            ]
            if page:
                yield page
        if cursor == "0-0":
            return


async def _ack_vanished(client: aioredis.Redis, key: str, consumer: str) -> None:
    """Ack entries ``consumer`` holds that are gone from the stream (Redis 6.2's nil claims)."""
    held: Any = await client.xpending_range(key, GROUP, "-", "+", 1000, consumername=consumer)
    ids = [_text(item["message_id"]) for item in held]
    if not ids:
        return
    pipe = client.pipeline(transaction=False)
    for entry_id in ids:
        pipe.xrange(key, min=entry_id, max=entry_id, count=1)
    gone = [i for i, found in zip(ids, await pipe.execute(), strict=True) if not found]
    if gone:
        await client.xack(key, GROUP, *gone)


async def missing_entries(
    client: aioredis.Redis, entries: Sequence[tuple[str, str]]
) -> set[tuple[str, str]]:
    """The (queue, stream id) pairs whose entry is no longer in its stream, in one pipeline."""
    if not entries:
        return set()
    pipe = client.pipeline(transaction=False)
    for queue, stream_id in entries:
        pipe.xrange(stream_key(queue), min=stream_id, max=stream_id, count=1)
    return {entry for entry, found in zip(entries, await pipe.execute(), strict=True) if not found}


async def stream_queues(client: aioredis.Redis) -> set[str]:
    """Queues that have a job stream in Redis."""
    found = set()
    async for key in client.scan_iter(match="taskforge:{*}:jobs", count=1000, _type="stream"):
        found.add(queue_of(key))
    return found


async def trim(client: aioredis.Redis, queue: str) -> int:
    """Drop entries every group has delivered and acked; returns how many went.

    XTRIM MINID cuts below the oldest entry still needed: the oldest pending one (delivered,
    not acked) or the first not yet delivered, over all groups. New entries only ever get
    higher ids, so reading these figures before trimming cannot race into dropping one. A
    stream without any group is left alone: none of its entries has been delivered.
    """
    key = stream_key(queue)
    try:
        groups: Any = await client.xinfo_groups(key)
    except ResponseError:
        return 0  # no such stream
    if not groups:
        return 0
    floor: tuple[int, int] | None = None
    for group in groups:
        ms, seq = parse_id(group["last-delivered-id"])
        candidates = [(ms, seq + 1)]
        if group["pending"]:
            summary: Any = await client.xpending(key, group["name"])
            if summary["min"] is not None:
                candidates.append(parse_id(summary["min"]))
        floor = min([*candidates, *([floor] if floor else [])])
    assert floor is not None
    trimmed: int = await client.xtrim(key, minid=f"{floor[0]}-{floor[1]}", approximate=False)
    return trimmed


# Atomic so that a consumer which reads an entry between our look and the delete keeps it.
_DELETE_IF_EMPTY = """
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) > 0 then return -1 end
return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
"""


async def remove_idle_consumers(client: aioredis.Redis, queue: str, idle_ms: int) -> list[str]:
    """XGROUP DELCONSUMER every consumer idle longer than ``idle_ms`` that holds no entry.

    A live worker that was merely quiet is recreated by its next XREADGROUP.
    """
    key = stream_key(queue)
    try:
        consumers: Any = await client.xinfo_consumers(key, GROUP)
    except ResponseError:
        return []
    idle = [c["name"] for c in consumers if c["pending"] == 0 and c["idle"] > idle_ms]
    removed = []
    for name in idle:
        if await client.eval(_DELETE_IF_EMPTY, 1, key, GROUP, name) != -1:
            removed.append(_text(name))
    return removed
