"""What the worker's parts share about its stores: the errors a store call may raise (all of
them waited out and retried, never fatal) and a pooled connection safe to cut short."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import asyncpg
from redis.exceptions import RedisError

STORE_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, RedisError)

# Reports a store error: where it happened, the error, the seconds until the retry.
ErrorReporter = Callable[[str, BaseException, float], None]


@asynccontextmanager
async def connection(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A connection of ``pool``, closed rather than reset if its call is cut short."""
    async with pool.acquire() as conn:
        try:
            yield conn
        except asyncio.CancelledError:
            # Taking back a connection whose query was cancelled, the pool first waits for the
            # cancel request and a reset: from a PostgreSQL that hangs, that is its command
            # timeout (60 s) past the deadline or heartbeat that cut the call short.
            conn.terminate()
            raise
