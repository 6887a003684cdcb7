"""A command that cannot connect to PostgreSQL says why in a sentence, not a traceback:
the database is missing, the login is refused, or nothing listens there."""

from __future__ import annotations

import socket
import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest

from taskforge.bench.system import EmbeddedSystem
from tests.conftest import _with_db
from tests.integration.helpers import run_taskforge


def _taskforge(*argv: str, postgres_url: str, redis_url: str, cwd: str) -> tuple[int, str]:
    done = run_taskforge(*argv, postgres_url=postgres_url, redis_url=redis_url, cwd=cwd)
    return done.returncode, done.stderr


def _missing_database(stores) -> tuple[str, str]:
    name = f"taskforge_missing_{uuid.uuid4().hex[:8]}"
    return name, _with_db(stores.postgres_url, name)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("command", [("migrate",), ("dev", "--no-reaper")])
def test_a_missing_database_is_named_with_what_to_do(stores, tmp_path, command):
    name, url = _missing_database(stores)
    code, err = _taskforge(*command, postgres_url=url, redis_url=stores.redis_url, cwd=tmp_path)
    assert code == 1
    assert f'database "{name}" does not exist: create it' in err
    assert "TASKFORGE_POSTGRES_URL" in err
    assert "Traceback" not in err


def test_a_refused_login_says_so(stores, tmp_path):
    parts = urlsplit(stores.postgres_url)
    if not parts.hostname:
        pytest.skip("the test server is reached over a unix socket without a user in its URL")
    netloc = f"no_such_role_{uuid.uuid4().hex[:6]}@{parts.hostname}:{parts.port or 5432}"
    url = urlunsplit(parts._replace(netloc=netloc))
    code, err = _taskforge("migrate", postgres_url=url, redis_url=stores.redis_url, cwd=tmp_path)
    assert code == 1
    assert "PostgreSQL refused the login" in err and "check the user and password" in err
    assert "Traceback" not in err


def test_nothing_listening_says_where_it_looked(stores, tmp_path):
    url = f"postgresql://postgres@127.0.0.1:{_closed_port()}/postgres"
    code, err = _taskforge("migrate", postgres_url=url, redis_url=stores.redis_url, cwd=tmp_path)
    assert code == 1
    assert "cannot reach PostgreSQL" in err and "127.0.0.1" in err
    assert "Traceback" not in err


def test_bench_embedded_reports_why_the_system_did_not_start(stores, monkeypatch):
    # The bench removes its data directory (and the log in it) when it stops, so the reason
    # must travel in the error itself.
    name, url = _missing_database(stores)
    monkeypatch.setenv("TASKFORGE_POSTGRES_URL", url)
    monkeypatch.setenv("TASKFORGE_REDIS_URL", stores.redis_url)
    system = EmbeddedSystem()
    try:
        with pytest.raises(RuntimeError) as raised:
            system.start(timeout=60)
    finally:
        system.stop()
    assert "taskforge dev exited with 1" in str(raised.value)
    assert f'database "{name}" does not exist' in str(raised.value)
