"""Telling an outcome PostgreSQL refuses from a store error that passes when sent again."""

from __future__ import annotations

import uuid

import asyncpg
import pytest
from asyncpg import exceptions as pg
from redis.exceptions import ConnectionError as RedisConnectionError

from taskforge.jobs import Status
from taskforge.lifecycle import Outcome
from taskforge.worker.refusals import is_transient, refused_as_dead


@pytest.mark.parametrize(
    "exc",
    [
        pg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        pg.ConnectionFailureError("connection failure"),
        asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
        ConnectionRefusedError(111, "Connect call failed"),
        TimeoutError(),
        RedisConnectionError("Connection refused"),
        pg.AdminShutdownError("terminating connection due to administrator command"),
        pg.CannotConnectNowError("the database system is starting up"),
        pg.TooManyConnectionsError("sorry, too many clients already"),
        pg.SerializationError("could not serialize access"),
        pg.DeadlockDetectedError("deadlock detected"),
        pg.QueryCanceledError("canceling statement due to statement timeout"),
        pg.LockNotAvailableError("canceling statement due to lock timeout"),
        pg.ReadOnlySQLTransactionError("cannot execute UPDATE in a read-only transaction"),
        pg.DiskFullError("could not extend file"),
        pg.UndefinedFunctionError("function taskforge_finish(...) does not exist"),
        pg.InternalServerError("cache lookup failed"),
        pg.PostgresError("an error without a SQLSTATE"),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_errors_of_the_connection_or_the_server_are_transient(exc: BaseException) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        pg.InvalidTextRepresentationError("invalid input syntax for type json"),
        pg.CharacterNotInRepertoireError("unsupported Unicode escape sequence"),
        pg.UntranslatableCharacterError("\\u0000 cannot be converted to text."),
        pg.DataError("invalid input for query argument $4: 'x' (a str is required)"),
        pg.NumericValueOutOfRangeError("value out of range"),
        pg.CheckViolationError('new row for relation "jobs" violates check constraint'),
        pg.NotNullViolationError('null value in column "status" violates not-null constraint'),
        pg.ForeignKeyViolationError("insert or update on table job_events violates"),
        pg.RaiseError("raised in a trigger"),
        pg.ProgramLimitExceededError("total size of jsonb array elements exceeds the maximum"),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_errors_an_outcomes_own_values_cause_are_refusals(exc: BaseException) -> None:
    assert not is_transient(exc)


def test_a_refused_outcome_becomes_dead_naming_the_error_storably() -> None:
    job_id = uuid.uuid4()
    refused = Outcome(job_id, 3, Status.COMPLETED, result_json="{not json")
    exc = pg.InvalidTextRepresentationError("invalid input syntax for type json: \x00 \udcff")
    dead = refused_as_dead(refused, exc)
    assert (dead.job_id, dead.attempt, dead.status, dead.result_json) == (
        job_id,
        3,
        Status.DEAD,
        None,
    )
    assert dead.error == (
        "the worker could not record its outcome (completed): InvalidTextRepresentationError: "
        "invalid input syntax for type json: \\x00 \\udcff"
    )
    dead.error.encode()  # no lone surrogate left: asyncpg could not send one
