"""Threads for sync handlers: a pool as large as the worker's concurrency, and a job that stays
this worker's until its handler's thread has returned.

asyncio's default executor has ``min(32, cpus + 4)`` threads: six here, against a concurrency
of 128, so sync jobs queued for a thread while their timeout ran. Here every running job can
have a thread, and a job's timeout counts from when its thread takes it.

Python cannot stop a thread safely (an exception raised into it at an arbitrary bytecode can
leave a lock held, logging's among them, and hang the whole worker). So a sync handler is
asked to stop (its context's ``stopping`` event is set) and the job is kept, its slot taken and
its lease renewed, until the handler returns; only then is the outcome of its timeout or
cancel recorded, or the job handed back. Recorded at once, its retry could run beside it.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class HandlerThreads:
    """The threads sync handlers run in: up to ``size`` at once, made as they are needed."""

    def __init__(self, size: int) -> None:
        self._executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix="tf-handler")

    async def run(
        self, func: Callable[..., T], *args: Any, on_start: Callable[[], None] | None = None
    ) -> T:
        """``func(*args)`` in a thread, in the caller's context (so its spans nest under the
        job's); ``on_start`` is called on the loop once a thread has taken it.

        Cancelled before a thread took it, it never runs. Cancelled after, it raises
        ``CancelledError`` only once the thread has returned, however often it is cancelled
        meanwhile: until then the job is still running here.
        """
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()

        def body() -> T:
            if on_start is not None:
                loop.call_soon_threadsafe(on_start)
            return context.run(func, *args)

        call = self._executor.submit(body)
        returned = asyncio.wrap_future(call)
        try:
            return await asyncio.shield(returned)
        except asyncio.CancelledError:
            if not call.cancel():  # it had started: wait for it to end
                while not returned.done():
                    try:
                        await asyncio.shield(returned)
                    except asyncio.CancelledError:
                        continue
                    except BaseException:
                        break
            raise

    def close(self) -> None:
        """Start no more calls; threads still running finish."""
        self._executor.shutdown(wait=False, cancel_futures=True)
