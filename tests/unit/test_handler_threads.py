"""Sync handlers' threads (taskforge.worker.threads): every call can have a thread at once, a
call cancelled before a thread took it never runs, and one cancelled while it runs is waited
for: the caller sees the cancel only once the thread has returned."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time

import pytest

from taskforge.worker.threads import HandlerThreads

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("VAR", default="unset")


async def test_a_call_cancelled_while_it_runs_ends_only_when_its_thread_returns() -> None:
    threads = HandlerThreads(2)
    entered, asked = threading.Event(), threading.Event()
    returned_at: list[float] = []

    def cleans_up_slowly() -> str:
        entered.set()
        asked.wait(10)
        time.sleep(0.3)  # cleaning up after being asked to stop
        returned_at.append(time.monotonic())
        return "late"

    call = asyncio.create_task(threads.run(cleans_up_slowly))
    assert await asyncio.to_thread(entered.wait, 10)
    call.cancel()
    asked.set()
    await asyncio.sleep(0.05)
    call.cancel()  # cancelled again meanwhile (a shutdown after a timeout): still waits
    with pytest.raises(asyncio.CancelledError):
        await call
    assert returned_at  # the thread had returned when the cancel came out
    threads.close()


async def test_a_call_cancelled_before_a_thread_takes_it_never_runs() -> None:
    threads = HandlerThreads(1)
    release, ran = threading.Event(), threading.Event()
    blocker = asyncio.create_task(threads.run(release.wait, 10))
    waiting = asyncio.create_task(threads.run(ran.set))
    await asyncio.sleep(0.05)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    release.set()
    assert await blocker is True
    # The one thread is free again and runs the next call; the cancelled one never ran.
    assert await threads.run(lambda: 42) == 42
    assert not ran.is_set()
    threads.close()


async def test_every_call_can_have_a_thread_at_once_and_on_start_is_called() -> None:
    size = 40  # more than asyncio's default executor has on any machine below 36 CPUs
    threads = HandlerThreads(size)
    barrier = threading.Barrier(size, timeout=10)
    started: list[int] = []
    results = await asyncio.gather(
        *(threads.run(barrier.wait, on_start=lambda i=i: started.append(i)) for i in range(size))
    )
    assert sorted(results) == list(range(size))
    assert sorted(started) == list(range(size))
    threads.close()


async def test_the_callers_context_reaches_the_thread() -> None:
    threads = HandlerThreads(1)
    VAR.set("the job's")
    assert await threads.run(VAR.get) == "the job's"
    threads.close()


async def test_an_error_of_a_cancelled_call_is_not_left_unretrieved() -> None:
    threads = HandlerThreads(1)
    entered, asked = threading.Event(), threading.Event()

    def fails_when_asked() -> None:
        entered.set()
        asked.wait(10)
        raise RuntimeError("stopped half way")

    call = asyncio.create_task(threads.run(fails_when_asked))
    assert await asyncio.to_thread(entered.wait, 10)
    call.cancel()
    asked.set()
    with pytest.raises(asyncio.CancelledError):
        await call
    threads.close()
