"""Handler registry: ``@registry.job("email.send")`` on async or sync functions.

A handler receives a :class:`JobContext` and the job's payload and returns a JSON-encodable
result. It asks for a retry by raising :class:`Retry` (optionally with a delay) and gives up
for good by raising :class:`Fail`; any other exception is a retryable failure.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from taskforge.jobs import Json
from taskforge.worker.threads import HandlerThreads

HandlerFunc = Callable[["JobContext", dict[str, Json]], Awaitable[Json] | Json]


class Retry(Exception):
    """Raise in a handler to retry the job, after ``delay`` seconds or the usual backoff."""

    def __init__(self, reason: str = "retry requested", *, delay: float | None = None) -> None:
        super().__init__(reason)
        self.delay = delay


class Fail(Exception):
    """Raise in a handler to fail the job terminally: it goes to the dead-letter state now."""


@dataclass(frozen=True)
class JobContext:
    """What a handler knows about the attempt it runs."""

    job_id: uuid.UUID
    type: str
    queue: str
    attempt: int
    max_attempts: int
    stream_id: str
    logger: logging.LoggerAdapter[logging.Logger]
    # A sync handler's: set when the worker stops the job (its timeout, a cancel, a lost
    # lease, shutdown). Python cannot stop a thread, so a handler that runs long checks it
    # (``ctx.stopping.is_set()``) or waits on it (``ctx.stopping.wait(5)``) and returns; the
    # job stays running until it does. None for an async handler: it is cancelled.
    stopping: threading.Event | None = None


class JobLogger(logging.LoggerAdapter[logging.Logger]):
    """A logger that adds the job's fields to every line, keeping the call's own ``extra``."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        kwargs["extra"] = {**(self.extra or {}), **(kwargs.get("extra") or {})}
        return msg, kwargs


@dataclass(frozen=True)
class Handler:
    """A registered handler; sync functions run in a thread so they never block the loop."""

    name: str
    func: HandlerFunc
    is_async: bool
    timeout: float | None = None

    async def __call__(
        self,
        ctx: JobContext,
        payload: dict[str, Json],
        threads: HandlerThreads | None = None,
        on_start: Callable[[], None] | None = None,
    ) -> Json:
        """Run the handler. A sync one runs in one of ``threads`` (asyncio's default executor
        without them), and ``on_start`` is called when its thread takes it."""
        if self.is_async:
            return await self.func(ctx, payload)
        if threads is None:
            result = await asyncio.to_thread(self.func, ctx, payload)
        else:
            result = await threads.run(self.func, ctx, payload, on_start=on_start)
        if inspect.isawaitable(result):
            # An async handler that does not look like one (behind a plain decorator, or an
            # object whose __call__ is async): the thread only made its coroutine; run it here.
            return await result
        return result


class Registry:
    """Maps job types to handlers."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def job(
        self, name: str, *, timeout: float | None = None
    ) -> Callable[[HandlerFunc], HandlerFunc]:
        """Register the decorated function as the handler of job type ``name``."""
        if not name or len(name) > 200:
            raise ValueError("a job type is 1-200 characters")

        def register(func: HandlerFunc) -> HandlerFunc:
            if name in self._handlers:
                raise ValueError(f"job type {name!r} is already registered")
            self._handlers[name] = Handler(name, func, inspect.iscoroutinefunction(func), timeout)
            return func

        return register

    def include(self, other: Registry) -> None:
        """Add every handler of ``other``; a type registered twice is an error."""
        for name, handler in other._handlers.items():
            if name in self._handlers and self._handlers[name] is not handler:
                raise DuplicateJobType(name)
            self._handlers[name] = handler

    def get(self, name: str) -> Handler | None:
        """The handler of a job type, or None."""
        return self._handlers.get(name)

    @property
    def types(self) -> list[str]:
        """Registered job types, sorted."""
        return sorted(self._handlers)


class HandlerImportError(ValueError):
    """TASKFORGE_HANDLERS cannot be loaded: an entry is not an importable registry, or it
    registers a job type that is built in or that an earlier entry registers."""


class DuplicateJobType(ValueError):
    """Two registries brought together each have a handler for the same job type."""

    def __init__(self, job_type: str) -> None:
        super().__init__(f"job type {job_type!r} is registered by two registries")
        self.job_type = job_type


def load(paths: Iterable[str]) -> Registry:
    """The built-in handlers plus every registry named in ``paths`` (``module`` or ``module:attr``).

    A module without ``:attr`` must define ``registry``.
    """
    from taskforge.worker.builtins import builtins

    registry = Registry()
    registry.include(builtins)
    for path in paths:
        module_name, _, attr = path.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise HandlerImportError(
                f"TASKFORGE_HANDLERS: cannot import {module_name!r} ({exc}); "
                "is it installed or on PYTHONPATH?"
            ) from None
        found: Any = getattr(module, attr or "registry", None)
        if not isinstance(found, Registry):
            raise HandlerImportError(
                f"TASKFORGE_HANDLERS: {path!r} is not a taskforge Registry; name one as "
                "'module:attribute' (a module alone must define 'registry')"
            )
        try:
            registry.include(found)
        except DuplicateJobType as exc:
            where = (
                f"is built in (the built-in types: {', '.join(builtins.types)})"
                if exc.job_type in builtins.types
                else "an earlier entry of TASKFORGE_HANDLERS registers it too"
            )
            raise HandlerImportError(
                f"TASKFORGE_HANDLERS: {path!r} registers job type {exc.job_type!r}, which "
                f"{where}; a job type has one handler: rename one of them"
            ) from None
    return registry
