"""Lanes: lean, pipelined Redis connections for the job path's per-batch commands.

redis-py 8's asyncio client spends 110–200 µs of CPU on every command here (a pool checkout
and release, the retry wrapper, event dispatch, metrics hooks, a timeout context per read),
more than the command costs Redis and more than asyncpg spends on a PostgreSQL round trip
(≈ 70 µs). At a trickle each job makes three such commands on its way (the dispatcher's
XADD script, a worker's XREADGROUP, the XACK after its finish), on two cores shared with
everything else. A lane writes commands packed by hiredis to one connection and hands each
reply, parsed by hiredis, to the future waiting for it, in order: 20–30 µs a command.

Only :mod:`taskforge.streams`' hot commands take lanes; everything else keeps redis-py.
A lane takes its address, credentials and database from the redis-py client it belongs to
(:class:`LaneClient`), so both always talk to the same Redis. Failures surface as
redis-py's exceptions (``ConnectionError``, ``ResponseError``, ``NoScriptError``), which the
deployables already retry; a lane whose connection broke connects again on its next command.
A reply that does not come within :data:`REPLY_TIMEOUT_SECONDS` (beyond a command's own
BLOCK) drops the connection with a ``ConnectionError``: a Redis that stopped answering, or a
network that drops packets, must not hold a worker's acks or reads forever.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Sequence
from typing import Any, cast

import hiredis
import redis.asyncio as aioredis
from redis._parsers import BaseParser  # its error table; not re-exported elsewhere
from redis.asyncio.connection import (
    AbstractConnection,
    Connection,
    SSLConnection,
    UnixDomainSocketConnection,
)
from redis.exceptions import AuthenticationError, RedisError
from redis.exceptions import (
    ConnectionError as RedisConnectionError,
)

Command = Sequence[str | bytes | int | float]

# Far above any reply of the job path (a batch's XADD script or XACK takes milliseconds),
# far below TCP's own give-up (minutes).
REPLY_TIMEOUT_SECONDS = 10.0


def reply_error(reply: hiredis.ReplyError) -> RedisError:
    """The exception redis-py makes of an error reply, by redis-py's own table: LOADING is a
    ``BusyLoadingError`` (a ``ConnectionError``, retried like a lost connection), NOSCRIPT a
    ``NoScriptError``, READONLY a ``ReadOnlyError``; codes it does not know stay in the
    message (NOGROUP, UNBLOCKED), as callers look for them there."""
    error: RedisError = BaseParser.parse_error(str(reply))  # type: ignore[no-untyped-call]
    return error


class _Replies(asyncio.Protocol):
    """One connection: replies go, in order, to the futures of the commands written."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.parser = hiredis.Reader()
        self.waiting: deque[asyncio.Future[Any]] = deque()
        self.transport: asyncio.Transport | None = None
        self.lost: RedisConnectionError | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses; they have its methods.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.parser.feed(data)
        try:
            while (reply := self.parser.gets()) is not False:
                waiter = self.waiting.popleft()
                # A caller cancelled while waiting (its reply still comes, in its turn).
                if not waiter.done():
                    waiter.set_result(reply)
        except (hiredis.ProtocolError, IndexError) as exc:
            # Garbage, or a reply nobody asked for: nothing after it can be matched.
            self._fail(f"unreadable reply from Redis at {self.where}: {exc!r}")
            assert self.transport is not None
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(f"connection to Redis at {self.where} lost: {exc or 'closed by the server'}")

    def abandon(self, message: str) -> RedisConnectionError:
        """Give up on this connection (a reply is overdue): fail every waiter, close it."""
        self._fail(message)
        if self.transport is not None:
            self.transport.abort()
        assert self.lost is not None
        return self.lost

    def _fail(self, message: str) -> None:
        if self.lost is None:
            self.lost = RedisConnectionError(message)
        while self.waiting:
            waiter = self.waiting.popleft()
            if not waiter.done():
                waiter.set_exception(self.lost)

    @property
    def usable(self) -> bool:
        return self.lost is None and self.transport is not None and not self.transport.is_closing()

    def send(self, commands: Sequence[Command]) -> list[asyncio.Future[Any]]:
        """Write the commands; one future per reply (a reply may be an error object)."""
        if not self.usable:
            raise self.lost or RedisConnectionError(f"connection to Redis at {self.where} closed")
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        waiters = [loop.create_future() for _ in commands]
        self.waiting.extend(waiters)
        # (hiredis's stub types the argument as a 1-tuple; any length packs.)
        packed = [hiredis.pack_command(tuple(c)) for c in commands]  # type: ignore[arg-type]
        self.transport.write(b"".join(packed))
        return waiters


class Lane:
    """A pipelined connection to the Redis a redis-py connection pool points at.

    Concurrent callers share it: their commands are written in the order they are issued
    and their replies come back in that order. A blocking command (XREADGROUP … BLOCK)
    holds up every command behind it, so it gets a lane of its own.
    """

    def __init__(self, pool: aioredis.ConnectionPool, name: str) -> None:
        # redis-py's connection object, never connected, is the parsed address: host and
        # port or unix path, TLS context, credentials, database, connect timeout.
        self._address: AbstractConnection = pool.connection_class(**pool.connection_kwargs)
        self.name = name
        self._replies: _Replies | None = None
        self._connecting = asyncio.Lock()

    async def execute(self, *command: str | bytes | int | float, blocks_for: float = 0.0) -> Any:
        """One command's reply; an error reply raises (see :func:`reply_error`).

        ``blocks_for`` is how long the command may block in Redis by its own arguments
        (XREADGROUP's BLOCK): the reply is awaited that much longer.
        """
        replies = await self._connected()
        (reply,) = await self._replies_of(replies, [command], blocks_for)
        if isinstance(reply, hiredis.ReplyError):
            raise reply_error(reply)
        return reply

    async def pipeline(self, commands: Sequence[Command]) -> list[Any]:
        """The commands written at once; their replies in order, error replies as
        exception objects in their places (as redis-py's ``raise_on_error=False``)."""
        if not commands:
            return []
        replies = await self._connected()
        results = await self._replies_of(replies, commands, 0.0)
        return [reply_error(r) if isinstance(r, hiredis.ReplyError) else r for r in results]

    @staticmethod
    async def _replies_of(
        replies: _Replies, commands: Sequence[Command], blocks_for: float
    ) -> list[Any]:
        waiters = replies.send(commands)
        limit = REPLY_TIMEOUT_SECONDS + blocks_for
        try:
            async with asyncio.timeout(limit):
                return [await waiter for waiter in waiters]
        except TimeoutError:
            lost = replies.abandon(
                f"no reply from Redis at {replies.where} within {limit:g}s; connection "
                "dropped (the next command connects again)"
            )
            for waiter in waiters:  # failed with it; nobody awaits them now
                if waiter.done() and not waiter.cancelled():
                    waiter.exception()
            raise lost from None

    async def aclose(self) -> None:
        """Close the connection (a later command opens a new one)."""
        replies, self._replies = self._replies, None
        if replies is not None and replies.transport is not None:
            replies.transport.close()

    async def _connected(self) -> _Replies:
        replies = self._replies
        if replies is not None and replies.usable:
            return replies
        async with self._connecting:
            if self._replies is None or not self._replies.usable:
                self._replies = await self._connect()
            return self._replies

    async def _connect(self) -> _Replies:
        address = self._address
        loop = asyncio.get_running_loop()
        opening: Awaitable[tuple[asyncio.BaseTransport, _Replies]]
        if isinstance(address, UnixDomainSocketConnection):
            where = address.path
            opening = loop.create_unix_connection(lambda: _Replies(where), address.path)
        elif isinstance(address, Connection):
            where = f"{address.host}:{address.port}"
            ssl = address.ssl_context.get() if isinstance(address, SSLConnection) else None
            opening = loop.create_connection(
                lambda: _Replies(where), address.host, address.port, ssl=ssl
            )
        else:
            raise TypeError(f"no lane for {type(address).__name__}: Redis over TCP, TLS or unix")
        try:
            async with asyncio.timeout(address.socket_connect_timeout):
                _, replies = await opening
        except (OSError, TimeoutError) as exc:
            raise RedisConnectionError(f"cannot connect to Redis at {where}: {exc!r}") from exc
        try:
            await self._handshake(replies)
        except BaseException:
            if replies.transport is not None:
                replies.transport.abort()
            raise
        return replies

    async def _handshake(self, replies: _Replies) -> None:
        """AUTH (when the URL or a credential provider has credentials), SELECT, and a client
        name that says what the connection is for in CLIENT LIST."""
        address = self._address
        credentials: tuple[str, ...] = ()
        if address.credential_provider is not None:
            credentials = tuple(address.credential_provider.get_credentials())
        elif address.password:
            credentials = (
                (address.username, address.password) if address.username else (address.password,)
            )
        commands: list[Command] = []
        if credentials:
            commands.append(("AUTH", *credentials))
        if address.db:
            commands.append(("SELECT", address.db))
        commands.append(("CLIENT", "SETNAME", self.name))
        answers = await self._replies_of(replies, commands, 0.0)
        for command, reply in zip(commands, answers, strict=True):
            if isinstance(reply, hiredis.ReplyError):
                if command[0] == "AUTH":
                    raise AuthenticationError(f"Redis at {replies.where} refused AUTH: {reply}")
                raise reply_error(reply)


class LaneClient(aioredis.Redis):
    """redis-py's client, plus the lanes :mod:`taskforge.streams` sends its hot commands on.

    Made by :func:`taskforge.streams.connect`; closing it closes its lanes.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lanes: dict[str, Lane] = {}

    def lane(self, role: str) -> Lane:
        """The lane for one use (``send``, ``read``, ``ack``), opened on first use."""
        lane = self.lanes.get(role)
        if lane is None:
            lane = self.lanes[role] = Lane(self.connection_pool, f"taskforge-{role}")
        return lane

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        """Close the lanes, then what redis-py holds."""
        for lane in self.lanes.values():
            await lane.aclose()
        await super().aclose(close_connection_pool)
