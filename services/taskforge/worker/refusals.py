"""Outcomes PostgreSQL refuses: telling them from a store that is down or busy, and the dead
outcome the finisher records in their place.

One outcome PostgreSQL refuses (a result that is not JSON, a value a constraint or trigger
rejects) fails the statement that records its whole batch, on every try; retried like a lost
connection, it would leave every outcome after it unrecorded.
"""

from __future__ import annotations

import asyncpg

from taskforge.jobs import Status
from taskforge.lifecycle import Outcome
from taskforge.worker.outcomes import storable

# SQLSTATE classes that an outcome's own values cause, so that PostgreSQL refuses it however
# often it is sent: 22 data exception (a result that is not JSON, a value out of range, an
# argument asyncpg cannot encode), 23 integrity constraint violation, 54 a value past a limit
# (a jsonb too large), and errors raised by a function or trigger: P0 PL/pgSQL, 09 triggered
# action, 27 triggered data change, 2F, 38 and 39 routines, 44 check option.
REFUSALS = frozenset({"09", "22", "23", "27", "2F", "38", "39", "44", "54", "P0"})


def is_transient(exc: BaseException) -> bool:
    """Whether a store error may pass when the same statement is sent again.

    Only an error of a class in :data:`REFUSALS` is not. Every other one is about the
    connection or the server, whatever the outcomes: lost (08, asyncpg's InterfaceError,
    OSError, a timeout), shutting down or starting (57), too many connections or a full disk
    (53), serialization failure or deadlock (40), a lock timeout (55), a read-only server after
    a failover (25), a function missing during an upgrade (42), and any SQLSTATE not known
    here. Retrying those is safe; taken for refusals, they would have every outcome isolated
    and recorded as dead.
    """
    if not isinstance(exc, asyncpg.PostgresError):
        return True
    sqlstate = getattr(exc, "sqlstate", None) or ""
    return sqlstate[:2] not in REFUSALS


def refused_as_dead(outcome: Outcome, exc: BaseException) -> Outcome:
    """What to record for an attempt whose ``outcome`` PostgreSQL refused with ``exc``: dead,
    saying why. Run again, the handler would most likely end the same way; dead, the job is
    where an operator looks, and can be replayed once the cause is mended."""
    why = f"{type(exc).__name__}: {str(exc)[:1000]}"
    error = f"the worker could not record its outcome ({outcome.status.value}): {why}"
    return Outcome(outcome.job_id, outcome.attempt, Status.DEAD, error=storable(error))
