"""Sync handlers' threads (taskforge.worker.threads): a cancelled call stops its thread, and an
interrupt never reaches the pool's own code or the next call the thread runs."""

from __future__ import annotations

import asyncio
import contextvars
import random
import threading

import pytest

from taskforge.worker.threads import HandlerInterrupted, HandlerThreads

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("VAR", default="unset")


async def test_a_cancelled_call_is_interrupted_in_its_thread() -> None:
    threads = HandlerThreads(2)
    entered, interrupted = threading.Event(), threading.Event()

    def spin() -> None:
        entered.set()
        try:
            while True:  # pure Python: never returns by itself
                pass
        except HandlerInterrupted:
            interrupted.set()
            raise

    call = asyncio.create_task(threads.run(spin))
    assert await asyncio.to_thread(entered.wait, 10)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert await asyncio.to_thread(interrupted.wait, 10)
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
    size = 24  # four times asyncio's default executor here
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


async def test_interrupts_never_leak_into_later_calls() -> None:
    """Cancel calls at random moments, many of them as they return; no later call on the same
    threads may see an interrupt meant for an earlier one, and the pool keeps its threads."""
    threads = HandlerThreads(2)
    rng = random.Random(7)

    def short(spins: int) -> int:
        total = 0
        for i in range(spins):
            total += i
        return total

    for _ in range(300):
        call = asyncio.create_task(threads.run(short, rng.randrange(0, 20_000)))
        await asyncio.sleep(rng.choice([0, 0, 0.0001, 0.0005]))
        call.cancel()
        try:
            await call
        except asyncio.CancelledError:
            pass
    await asyncio.sleep(0.05)  # any interrupt still pending would land now, in an idle thread
    for _ in range(500):  # bounded: with its threads killed, the pool would never answer
        assert await asyncio.wait_for(threads.run(short, 100), 5) == 4950
    pool = threads._executor._threads  # an interrupt landing in the pool's loop kills a thread
    assert pool and all(thread.is_alive() for thread in pool)
    threads.close()
