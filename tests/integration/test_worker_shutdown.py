"""Stopping a worker never hangs, whatever state its side tasks are in."""

from __future__ import annotations

import asyncio

from tests.integration.helpers import running_pipeline


async def test_worker_stops_right_after_start_without_hanging(pool, redis_client, settings):
    # Stopping while the cancel listener is still subscribing used to wait out the whole
    # shutdown timeout: redis-py swallowed the cancellation. Generous bound: a hang guard.
    async with asyncio.timeout(10):
        async with running_pipeline(pool, redis_client, settings):
            pass
