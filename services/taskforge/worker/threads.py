"""Threads for sync handlers: a pool as large as the worker's concurrency, and a way to stop a
handler that its job no longer wants (timeout, cancel, lost lease, shutdown).

asyncio's default executor has ``min(32, cpus + 4)`` threads: six here, against a concurrency
of 128, so sync jobs queued for a thread while their timeout ran, and a handler cancelled by
its timeout ran on in its thread beside the retry. Here every running job can have a thread,
and a cancelled one is interrupted: :class:`HandlerInterrupted` is raised inside its thread
(``PyThreadState_SetAsyncExc``, as dramatiq's time limits do) at the next Python bytecode the
handler runs. A thread blocked in a C call (``time.sleep``, a socket read without a timeout)
sees it only when that call returns.
"""

from __future__ import annotations

import asyncio
import contextvars
import ctypes
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc


class HandlerInterrupted(BaseException):
    """Raised inside a sync handler's thread when its job is stopped.

    A ``BaseException``, like ``KeyboardInterrupt``, so a handler's ``except Exception`` does
    not swallow it.
    """


class _Call:
    """One handler call in a thread: which thread runs it, and whether it was stopped.

    An interrupt is only ever set under ``lock`` while ``thread`` is set, and the thread clears
    ``thread`` (dropping an interrupt set but not yet raised) under the same lock before it
    leaves: so an interrupt can never land in the pool's own code or in the next job.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.thread: int | None = None
        self.stopped = False

    def body(
        self,
        loop: asyncio.AbstractEventLoop,
        on_start: Callable[[], None] | None,
        context: contextvars.Context,
        func: Callable[..., T],
        *args: Any,
    ) -> T:
        with self.lock:
            if self.stopped:  # stopped before a thread was free
                raise HandlerInterrupted
            self.thread = threading.get_ident()
        try:
            if on_start is not None:
                loop.call_soon_threadsafe(on_start)
            return context.run(func, *args)
        finally:
            self._leave()

    def _leave(self) -> None:
        while True:
            try:
                with self.lock:
                    self.thread = None
                    _set_async_exc(ctypes.c_ulong(threading.get_ident()), None)
                return
            except HandlerInterrupted:
                continue  # raised just now, as we took the lock: the one interrupt; go on

    def interrupt(self) -> bool:
        """Raise :class:`HandlerInterrupted` in the call's thread, if it is running."""
        with self.lock:
            self.stopped = True
            if self.thread is None:
                return False
            _set_async_exc(ctypes.c_ulong(self.thread), ctypes.py_object(HandlerInterrupted))
            return True


class HandlerThreads:
    """The threads sync handlers run in: up to ``size`` at once, made as they are needed."""

    def __init__(self, size: int) -> None:
        self._executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix="tf-handler")

    async def run(
        self, func: Callable[..., T], *args: Any, on_start: Callable[[], None] | None = None
    ) -> T:
        """``func(*args)`` in a thread, in the caller's context (so its spans nest under the
        job's); ``on_start`` is called on the loop once a thread has taken it. Cancelling the
        caller interrupts the thread (see :class:`HandlerInterrupted`)."""
        loop = asyncio.get_running_loop()
        call = _Call()
        context = contextvars.copy_context()
        future = loop.run_in_executor(
            self._executor, call.body, loop, on_start, context, func, *args
        )
        try:
            return await future
        except asyncio.CancelledError:
            call.interrupt()
            raise

    def close(self) -> None:
        """Start no more calls; threads still running finish (interrupted ones stop)."""
        self._executor.shutdown(wait=False, cancel_futures=True)
