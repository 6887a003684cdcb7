"""What every deployable's application shares: its PostgreSQL pool as a cleanup_ctx."""

from __future__ import annotations

from taskforge import resources


async def test_a_deployable_names_its_postgres_connections_after_itself(settings, clean):
    """pg_stat_activity tells an operator which deployable holds a lock or runs a query."""
    app = resources.base_app(settings)
    app[resources.SERVICE] = "worker"
    context = resources.postgres_ctx(app)
    await anext(context)
    try:
        async with app[resources.POOL].acquire() as conn:
            mine = await conn.fetchval("SELECT pg_backend_pid()")
            named = await conn.fetchval(
                "SELECT application_name FROM pg_stat_activity WHERE pid = $1", mine
            )
        assert named == "taskforge-worker"
    finally:
        await anext(context, None)
