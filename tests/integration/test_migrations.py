"""The migration runner records what it applied and refuses a database migrated from other
text than this release's files, naming each file, before it applies anything."""

from __future__ import annotations

import socket
import subprocess
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from taskforge import store
from tests.conftest import Stores, _with_db
from tests.integration.helpers import run_taskforge


@pytest.fixture
async def scratch_url(stores: Stores) -> AsyncIterator[str]:
    """A database of its own, dropped afterwards: these tests rewrite its migration record."""
    name = f"taskforge_migrations_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(stores.postgres_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield _with_db(stores.postgres_url, name)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def _record(url: str) -> dict[int, tuple[str, str | None]]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT version, name, checksum FROM taskforge_migrations")
    finally:
        await conn.close()
    return {row["version"]: (row["name"], row["checksum"]) for row in rows}


async def _execute(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _this_release() -> dict[int, tuple[str, str | None]]:
    """The record a database migrated by this release holds: version → (name, checksum)."""
    return {
        version: (name, store.migration_checksum(sql))
        for version, name, sql in store.migration_files()
    }


async def test_every_applied_migration_is_recorded_with_its_files_checksum(scratch_url):
    files = store.migration_files()
    applied = await store.migrate_url(scratch_url)
    assert applied == [name for _, name, _ in files]
    assert await _record(scratch_url) == _this_release()
    assert await store.migrate_url(scratch_url) == []


async def test_a_changed_migration_is_refused_by_name_before_anything_is_applied(scratch_url):
    await store.migrate_url(scratch_url)
    last_version = store.migration_files()[-1][0]
    # As if 0005 had been applied from other text, and the last migration were still to come.
    await _execute(
        scratch_url,
        "UPDATE taskforge_migrations SET checksum = repeat('0', 64) WHERE version = 5;"
        f"DELETE FROM taskforge_migrations WHERE version = {last_version}",
    )
    with pytest.raises(store.MigrationMismatch) as raised:
        await store.migrate_url(scratch_url)
    message = str(raised.value)
    assert "0005_notify_from_api.sql" in message
    assert "sha256 000000000000" in message
    assert "taskforge migrate --repair" in message
    assert "0001_jobs.sql" not in message
    assert last_version not in await _record(scratch_url)  # nothing applied after the refusal


async def test_repair_records_this_releases_text(scratch_url):
    await store.migrate_url(scratch_url)
    await _execute(
        scratch_url, "UPDATE taskforge_migrations SET checksum = 'edited' WHERE version = 5"
    )
    assert await store.migrate_url(scratch_url, repair=True) == []
    assert await _record(scratch_url) == _this_release()
    assert await store.migrate_url(scratch_url) == []


async def test_a_record_without_checksums_takes_the_files_on_first_sight(scratch_url):
    # A database migrated by a release that kept no checksums: the column did not exist.
    await store.migrate_url(scratch_url)
    await _execute(scratch_url, "ALTER TABLE taskforge_migrations DROP COLUMN checksum")
    assert await store.migrate_url(scratch_url) == []
    assert await _record(scratch_url) == _this_release()


def _migrate_cli(url: str, *argv: str, cwd: str) -> subprocess.CompletedProcess[str]:
    with socket.socket() as probe:  # a free ops port for the deployable
        probe.bind(("127.0.0.1", 0))
        ops_port = probe.getsockname()[1]
    return run_taskforge(*argv, postgres_url=url, cwd=cwd, TASKFORGE_OPS_PORT=str(ops_port))


async def test_the_commands_refuse_a_changed_migration_in_a_sentence(scratch_url, tmp_path):
    await store.migrate_url(scratch_url)
    await _execute(
        scratch_url, "UPDATE taskforge_migrations SET checksum = 'edited' WHERE version = 3"
    )
    for argv in (("migrate",), ("scheduler",)):
        done = _migrate_cli(scratch_url, *argv, cwd=str(tmp_path))
        assert done.returncode == 2, done.stderr
        assert f"taskforge {argv[0]}: 1 migration(s) applied" in done.stderr
        assert "0003_schedules.sql" in done.stderr
        assert "Traceback" not in done.stderr
    repaired = _migrate_cli(scratch_url, "migrate", "--repair", cwd=str(tmp_path))
    assert repaired.returncode == 0, repaired.stderr
    assert "applied 0 migration(s)" in repaired.stdout
