"""PostgreSQL access: the pool, its codecs, and the versioned migrations.

Driver errors stay asyncpg's; the lifecycle module above decides what they mean.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from importlib import resources
from typing import Any

import asyncpg
import orjson

log = logging.getLogger("taskforge.store")

# Any constant shared by every taskforge process; one process at a time migrates.
MIGRATION_LOCK_ID = 0x7461736B  # "task"

Pool = asyncpg.Pool
Connection = asyncpg.Connection

# Why a connection to PostgreSQL could not be made, as opposed to what a statement can fail
# with once connected: the server is not there or not ready, the database does not exist,
# the login is refused, the URL is malformed. A command line that meets one of these says so
# in a sentence (describe_connect_error) instead of a traceback.
CONNECT_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    asyncpg.InvalidCatalogNameError,
    asyncpg.InvalidAuthorizationSpecificationError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.ClientConfigurationError,
)


def describe_connect_error(exc: BaseException) -> str:
    """What went wrong connecting to PostgreSQL, and what to do, for a person to read."""
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        # The server's own message names the database: 'database "x" does not exist'.
        return f"{exc}: create it (createdb, or CREATE DATABASE) or name another one"
    if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):
        return f"PostgreSQL refused the login ({exc}): check the user and password"
    if isinstance(exc, OSError):
        return f"cannot reach PostgreSQL ({exc}): check that it runs at that host and port"
    return f"PostgreSQL: {exc}"


class PooledConnection(asyncpg.Connection):  # type: ignore[misc]
    """A pool connection released without asyncpg's reset query.

    The default release runs ``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``:
    a round trip per acquire that cost the api about a tenth of its CPU per request. taskforge
    keeps no session state on pool connections (LISTEN and the migration lock use their own
    connections), and asyncpg still rolls back an open transaction on release.
    """

    def get_reset_query(self) -> str:
        return ""


async def _plan_each_execution(conn: asyncpg.Connection) -> None:
    await _init_connection(conn)
    # Batched statements (claim, finish, dispatch, rescue) join a batch to jobs. A generic
    # plan cached while the table was nearly empty (a nested loop over a sequential scan)
    # stayed in use as it grew: after a trickle of 200 jobs, a burst of 20k drained at 540
    # jobs/s, and a 5,000-outcome finish ran for seconds. Planning a batch statement each
    # time costs far less than that; single-row statements (the api's) keep cached plans.
    # The hot-path transitions keep one plan each all the same: their functions force a
    # generic plan that can only read the batch's ids through the primary key (0013, 0015).
    await conn.execute("SET plan_cache_mode = force_custom_plan")


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda value: orjson.dumps(value).decode(),
        decoder=orjson.loads,
        schema="pg_catalog",
    )


async def create_pool(
    url: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    batch_statements: bool = True,
    application_name: str = "taskforge",
) -> asyncpg.Pool:
    """A pool whose connections read and write jsonb as Python objects (orjson).

    ``application_name`` names the connections in ``pg_stat_activity`` (``taskforge-worker``
    and so on), so an operator can tell which deployable holds a lock or runs a slow query.

    ``batch_statements`` (the default) plans every execution for the table as it is now; the
    api turns it off, its statements touch single rows and planning each request cost it a
    tenth of its throughput (the scheduler ANALYZEs jobs as it grows, which refreshes them).
    """
    pool: asyncpg.Pool = await asyncpg.create_pool(
        url,
        min_size=min_size,
        max_size=max_size,
        init=_plan_each_execution if batch_statements else _init_connection,
        connection_class=PooledConnection,
        # Prepared statements are cached per connection; the lifecycle's queries are few.
        statement_cache_size=256,
        command_timeout=60,
        # Sent in the startup packet: no round trip of its own.
        server_settings={"application_name": application_name},
    )
    return pool


class MigrationMismatch(Exception):
    """A migration recorded as applied to this database differs from this release's file.

    Migrations are never edited once they have run anywhere: a database migrated from the
    earlier text lacks what the new text adds (a function, a column), and the deployables
    would fail later with errors that do not point here. The message names each file.
    """


def migration_files() -> list[tuple[int, str, str]]:
    """(version, name, sql) for every file under ``taskforge/migrations``, in order."""
    found = []
    for entry in resources.files("taskforge.migrations").iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append((version, entry.name, entry.read_text()))
    return sorted(found)


def migration_checksum(sql: str) -> str:
    """The SHA-256 of a migration's text, as recorded when it is applied."""
    return hashlib.sha256(sql.encode()).hexdigest()


def _mismatch_message(mismatched: list[tuple[str, asyncpg.Record, str]]) -> str:
    lines = [
        f"{len(mismatched)} migration(s) applied to this database differ from this release's files:"
    ]
    for name, row, checksum in mismatched:
        applied = row["applied_at"].strftime("%Y-%m-%d %H:%M UTC")
        renamed = f" as {row['name']}" if row["name"] != name else ""
        lines.append(
            f"  {name}: applied {applied}{renamed} (sha256 {row['checksum'][:12]}), "
            f"this release's file is sha256 {checksum[:12]}"
        )
    lines.append(
        "An applied migration must never change. Restore the file as it was and put the "
        "change in a new migration; for a database you can throw away (taskforge dev keeps "
        "its own under --data-dir, default .taskforge/) delete it and migrate afresh; if you "
        "know the change is harmless (a comment), `taskforge migrate --repair` records this "
        "release's text as applied."
    )
    return "\n".join(lines)


async def migrate(conn: asyncpg.Connection, *, repair: bool = False) -> list[str]:
    """Apply pending migrations under an advisory lock; return the names applied.

    Several replicas starting together queue on the lock; the later ones find nothing to do.
    Each applied migration's checksum is recorded; one whose file has changed since raises
    :class:`MigrationMismatch` before anything is applied, unless ``repair`` is set, which
    records the files' checksums instead (for an edit known to be harmless). Rows recorded
    by a release that kept no checksums take the current file's on first sight.
    """
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_ID)
    try:
        # One round trip; the ALTER is for a table made by a release that kept no checksums.
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS taskforge_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now(), checksum text);"
            "ALTER TABLE taskforge_migrations ADD COLUMN IF NOT EXISTS checksum text"
        )
        done = {
            row["version"]: row
            for row in await conn.fetch(
                "SELECT version, name, applied_at, checksum FROM taskforge_migrations"
            )
        }
        files = [(v, name, sql, migration_checksum(sql)) for v, name, sql in migration_files()]
        mismatched = []
        for version, name, _, checksum in files:
            row = done.get(version)
            if row is None or row["checksum"] == checksum:
                continue
            if row["checksum"] is None or repair:
                await conn.execute(
                    "UPDATE taskforge_migrations SET checksum = $2 WHERE version = $1",
                    version,
                    checksum,
                )
                if row["checksum"] is not None:
                    log.warning(
                        "migration checksum repaired",
                        extra={"action": "migrate.repair", "migration": name},
                    )
            else:
                mismatched.append((name, row, checksum))
        if mismatched:
            raise MigrationMismatch(_mismatch_message(mismatched))
        applied = []
        for version, name, sql, checksum in files:
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO taskforge_migrations (version, name, checksum)"
                    " VALUES ($1, $2, $3)",
                    version,
                    name,
                    checksum,
                )
            log.info("migration applied", extra={"action": "migrate", "migration": name})
            applied.append(name)
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_ID)


async def migrate_url(
    url: str, application_name: str = "taskforge-migrate", *, repair: bool = False
) -> list[str]:
    """Connect, migrate, disconnect; the connection named ``application_name``, so a
    deployable queued on the migration lock shows who it is in ``pg_stat_activity``."""
    conn = await asyncpg.connect(url, server_settings={"application_name": application_name})
    try:
        return await migrate(conn, repair=repair)
    finally:
        await conn.close()


async def connect_with_retry(
    url: str, *, attempts: int = 30, application_name: str = "taskforge", **kwargs: Any
) -> asyncpg.Pool:
    """Migrate and create a pool (both named ``application_name``), retrying with backoff
    while PostgreSQL is not reachable yet."""
    delay = 0.2
    for attempt in range(1, attempts + 1):
        try:
            await migrate_url(url, application_name)
            return await create_pool(url, application_name=application_name, **kwargs)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            if attempt == attempts:
                raise
            log.warning(
                "PostgreSQL not reachable, retrying",
                extra={
                    "action": "store.connect",
                    "error": describe_connect_error(exc),
                    "retry_in": delay,
                },
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
    raise AssertionError("unreachable")
