"""Redis Streams: key names, the message envelope, and the batched stream operations.

Only the scheduler calls :func:`send`; workers read, ack and renew; the reaper reclaims.
Every operation that runs per job takes a batch and makes one round trip (a pipeline, or for
sending a script that XADDs a whole batch); those three (:func:`send`, :func:`read`,
:func:`ack`) go over the client's lanes (:mod:`taskforge.lanes`), the rest over redis-py.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple, TypeVar, cast

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

from taskforge.jobs import fast_uuid
from taskforge.lanes import LaneClient
from taskforge.pb import messages_pb2

GROUP = "workers"
DLQ_STREAM = "taskforge:dlq"
DLQ_MAXLEN = 100_000
FIELD = b"m"

T = TypeVar("T")


def stream_key(queue: str) -> str:
    """The job stream of a queue; the hash tag keeps a queue's keys in one cluster slot."""
    return f"taskforge:{{{queue}}}:jobs"


def backlog_key(queue: str) -> str:
    """Hash where the scheduler publishes a queue's undispatched due rows (for the operator)."""
    return f"taskforge:{{{queue}}}:backlog"


def cancel_channel() -> str:
    """Pub/sub channel on which the api tells workers to cancel a running job."""
    return "taskforge:cancel"


def queue_of(key: str | bytes) -> str:
    """The queue name inside a stream key."""
    text = key.decode() if isinstance(key, bytes) else key
    return text[text.index("{") + 1 : text.rindex("}")]


def connect(url: str, **kwargs: Any) -> LaneClient:
    """A client speaking bytes (the envelope is protobuf) with health checks on idle sockets,
    and lanes (:mod:`taskforge.lanes`) for :func:`send`, :func:`read` and :func:`ack`.

    Every deployable's Redis client is made here. Its connections keep the class the URL
    chooses (TCP, TLS or unix socket) with :class:`ClosedTransportIsConnectionError` mixed in.
    """
    client = cast(
        LaneClient,
        LaneClient.from_url(url, decode_responses=False, health_check_interval=30, **kwargs),
    )
    pool = client.connection_pool
    # No connection exists yet (the pool makes them on first use), so swapping is safe.
    pool.connection_class = reporting_closed_transports(pool.connection_class)
    return client


# What uvloop says when asked to write to a transport whose libuv handle it has closed
# (uvloop/handles/handle.pyx, ``_ensure_alive``): "unable to perform operation on
# <TCPTransport closed=True ...>; the handler is closed".
_CLOSED_HANDLE = "the handler is closed"


def is_closed_transport_error(exc: BaseException) -> bool:
    """Whether ``exc`` is uvloop refusing to write to a transport it has already closed."""
    return isinstance(exc, RuntimeError) and _CLOSED_HANDLE in str(exc)


class ClosedTransportIsConnectionError(AbstractConnection):
    """Mixed in before a redis-py connection class: a write to a transport uvloop has closed
    raises ``redis.exceptions.ConnectionError`` (chained from uvloop's ``RuntimeError``).

    Why: when Redis goes away, uvloop closes a transport as soon as a read or write on it
    fails, and redis-py may still write to it (a command, or the HELLO/SELECT/CLIENT SETINFO
    handshake of a reconnect). uvloop then raises ``RuntimeError`` (asyncio's own loop drops
    the write and lets ``drain`` raise ``ConnectionResetError``), which redis-py passes on as
    is: it converts only ``OSError`` and timeouts. Neither redis-py's retries nor ours
    (``STORE_ERRORS`` and the like) take a ``RuntimeError`` for the connection failure it
    is, so a worker's cancel listener died of one during a Redis restart, and the worker
    with it. As a ``ConnectionError`` it is retried like any other lost connection.

    ``send_packed_command`` is where every write happens: commands, pipelines, pub/sub and
    the handshake all send through it (``_connect`` needs nothing: redis-py already turns
    any error there into a ``ConnectionError``). redis-py has disconnected the connection
    before the error reaches us, so the next use reconnects.

    Only uvloop's closed-handle error is converted. Other RuntimeErrors stay what they are:
    "Event loop is closed" (a client used after its loop, e.g. at interpreter shutdown) or
    "Cannot call writelines() after write_eof()" are bugs or shutdown, not a connection
    failure, and retrying them would only hide that. (A transport whose uvloop loop was
    closed says "the handler is closed" too, and is as dead: that one is converted.)
    """

    async def send_packed_command(
        self, command: bytes | str | Iterable[bytes], check_health: bool = True
    ) -> None:
        """Send as redis-py does; a closed uvloop transport raises ``ConnectionError``."""
        try:
            await super().send_packed_command(command, check_health)
        except RuntimeError as exc:
            if not is_closed_transport_error(exc):
                raise
            raise RedisConnectionError(
                f"Error while writing to {self._host_error()}: {exc}"
            ) from exc


_REPORTING: dict[type[AbstractConnection], type[AbstractConnection]] = {}


def reporting_closed_transports(base: type[AbstractConnection]) -> type[AbstractConnection]:
    """``base`` with :class:`ClosedTransportIsConnectionError` mixed in (one class per base)."""
    if issubclass(base, ClosedTransportIsConnectionError):
        return base
    mixed = _REPORTING.get(base)
    if mixed is None:
        namespace = {"__module__": __name__, "__qualname__": base.__qualname__}
        mixed = cast(
            type[AbstractConnection],
            type(base.__name__, (ClosedTransportIsConnectionError, base), namespace),
        )
        _REPORTING[base] = mixed
    return mixed


class Envelope(NamedTuple):
    """A decoded stream entry."""

    stream_id: str
    job_id: uuid.UUID
    type: str
    queue: str
    attempt: int
    enqueued_at: float
    priority: int
    timeout_seconds: float
    headers: dict[str, str]
    dispatch_lock: int = 0  # see taskforge.lifecycle.new_dispatch_lock; 0 from old schedulers


def encode(
    job_id: uuid.UUID,
    type_: str,
    queue: str,
    attempt: int,
    priority: int,
    timeout_seconds: float,
    headers: dict[str, str],
    dispatch_lock: int = 0,
) -> bytes:
    """Serialize a ``JobMessage``."""
    # Set field by field, and the headers map only when there are any: the keyword
    # constructor cost 3.1 µs a job, most of it the (usually empty) map; this 1.6. The
    # dispatcher encodes every job it sends: this was a third of its CPU in a batch drain.
    message = messages_pb2.JobMessage()
    message.job_id = str(job_id)
    message.type = type_
    message.queue = queue
    message.attempt = attempt
    message.enqueued_at_unix_ms = int(time.time() * 1000)
    message.priority = priority
    message.timeout_seconds = timeout_seconds
    message.dispatch_lock = dispatch_lock
    if headers:
        message.headers.update(headers)
    data: bytes = message.SerializeToString()
    return data


def decode(stream_id: str, data: bytes) -> Envelope | None:
    """Parse an entry; None for an entry that is not a valid ``JobMessage`` (poison)."""
    try:
        message = messages_pb2.JobMessage.FromString(data)
        job_id = fast_uuid(message.job_id)  # 0.2 µs; uuid.UUID(str) took 1.5 per job
    except Exception:  # protobuf raises DecodeError, uuid ValueError: both mean garbage
        return None
    return Envelope(
        stream_id=stream_id,
        job_id=job_id,
        type=message.type,
        queue=message.queue,
        attempt=message.attempt,
        enqueued_at=message.enqueued_at_unix_ms / 1000.0,
        priority=message.priority,
        timeout_seconds=message.timeout_seconds,
        # Most entries carry no trace context; copying an empty protobuf map costs 1.5 us.
        headers=dict(message.headers) if message.headers else {},
        dispatch_lock=message.dispatch_lock,
    )


async def ensure_groups(client: aioredis.Redis, queues: Iterable[str]) -> None:
    """Create each queue's stream and consumer group if missing (idempotent)."""
    pipe = client.pipeline(transaction=False)
    for queue in queues:
        pipe.xgroup_create(stream_key(queue), GROUP, id="0", mkstream=True)
    for result in await pipe.execute(raise_on_error=False):
        if isinstance(result, ResponseError) and "BUSYGROUP" not in str(result):
            raise result


# XADD of every message of a batch to one stream, in one command: a pipeline of one XADD per
# job cost the scheduler 40 µs of CPU per job in redis-py (packing each command, parsing
# each reply), this script 3.4 µs (measured, 500-entry batches). One key per call, so it
# also runs on Redis Cluster; the entries are added in order and the ids come back in order.
SEND_SCRIPT = (
    b"""
local ids = {}
for i = 1, #ARGV do
    ids[i] = redis.call('XADD', KEYS[1], '*', '%s', ARGV[i])
end
return ids
"""
    % FIELD
)
SEND_SHA = hashlib.sha1(SEND_SCRIPT).hexdigest()


async def send(client: LaneClient, messages: Sequence[tuple[str, bytes]]) -> list[str]:
    """XADD every (queue, message), one script call per stream; the entry ids in order."""
    lane = client.lane("send")
    ids: list[str] = [""] * len(messages)
    for queue, indexes in _by_queue((queue, i) for i, (queue, _) in enumerate(messages)).items():
        args: list[str | bytes] = [stream_key(queue), *(messages[i][1] for i in indexes)]
        reply: Any
        try:
            reply = await lane.execute("EVALSHA", SEND_SHA, 1, *args)
        except NoScriptError:  # a new or restarted Redis: EVAL also caches the script
            reply = await lane.execute("EVAL", SEND_SCRIPT, 1, *args)
        for index, entry_id in zip(indexes, reply, strict=True):
            ids[index] = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
    return ids


async def read(
    client: LaneClient, queues: Sequence[str], consumer: str, count: int, block_ms: int
) -> list[tuple[str, str, bytes | None]]:
    """XREADGROUP new entries from the queues' streams: (queue, stream id, data).

    On a lane of its own: a blocked read would hold up any command behind it.
    """
    keys = [stream_key(q) for q in queues]
    reply: Any = await client.lane("read").execute(
        "XREADGROUP", "GROUP", GROUP, consumer, "COUNT", count, "BLOCK", block_ms,
        "STREAMS", *keys, *[">"] * len(keys), blocks_for=block_ms / 1000,
    )  # fmt: skip
    found: list[tuple[str, str, bytes | None]] = []
    for key, entries in reply or []:
        queue = queue_of(key)
        for entry_id, fields in entries:
            found.append((queue, entry_id.decode(), _field(fields)))
    return found


def _field(fields: list[bytes] | None) -> bytes | None:
    """The message field of an entry's flat [field, value, …] list (None if deleted)."""
    if fields:
        for index in range(0, len(fields) - 1, 2):
            if fields[index] == FIELD:
                return fields[index + 1]
    return None


def _by_queue(entries: Iterable[tuple[str, T]]) -> dict[str, list[T]]:
    """Stream ids (or message indexes) grouped by queue, in order: one command per stream."""
    grouped: dict[str, list[T]] = {}
    for queue, stream_id in entries:
        grouped.setdefault(queue, []).append(stream_id)
    return grouped


async def ack(client: LaneClient, entries: Sequence[tuple[str, str]]) -> None:
    """XACK (queue, stream id) pairs, one XACK per stream, in one pipeline.

    A stream or group that no longer exists (Redis flushed or restarted empty) holds nothing
    to acknowledge: that is not an error.
    """
    if not entries:
        return
    commands = [("XACK", stream_key(q), GROUP, *ids) for q, ids in _by_queue(entries).items()]
    _raise_unless_nogroup(await client.lane("ack").pipeline(commands))


async def touch(client: aioredis.Redis, consumer: str, entries: Sequence[tuple[str, str]]) -> None:
    """Reset the idle time of entries this consumer holds (XCLAIM … JUSTID to itself).

    The reaper reclaims entries idle past the visibility timeout; a heartbeat calls this so a
    long-running job is never taken for one whose worker died. Like :func:`ack`, it ignores
    streams whose group is gone (Redis flushed or restarted empty): there is nothing to keep.
    """
    if not entries:
        return
    pipe = client.pipeline(transaction=False)
    for queue, ids in _by_queue(entries).items():
        pipe.xclaim(stream_key(queue), GROUP, consumer, 0, list[Any](ids), justid=True)
    _raise_unless_nogroup(await pipe.execute(raise_on_error=False))


async def publish_dead(client: aioredis.Redis, notices: Sequence[dict[str, Any]]) -> None:
    """Append dead-letter notices to ``taskforge:dlq`` (approximately capped)."""
    if not notices:
        return
    pipe = client.pipeline(transaction=False)
    for notice in notices:
        message = messages_pb2.DeadLetterNotice(
            job_id=str(notice["job_id"]),
            type=notice["type"],
            queue=notice["queue"],
            attempts=notice["attempts"],
            error=notice.get("error") or "",
            died_at_unix_ms=int(time.time() * 1000),
            headers=notice.get("headers") or {},
        )
        pipe.xadd(
            DLQ_STREAM, {FIELD: message.SerializeToString()}, maxlen=DLQ_MAXLEN, approximate=True
        )
    await pipe.execute()


def _raise_unless_nogroup(results: Sequence[Any]) -> None:
    for result in results:
        if isinstance(result, ResponseError) and "NOGROUP" not in str(result):
            raise result
