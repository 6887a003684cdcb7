"""The dispatcher's loop: when it asks for the next due time, and when it goes straight on."""

from __future__ import annotations

import asyncio
from typing import Any

from taskforge.scheduler.dispatcher import Dispatcher


class ScriptedDispatcher(Dispatcher):
    """Rounds that return scripted counts, optionally woken (a NOTIFY) while they run."""

    def __init__(self, rounds: list[tuple[int, bool]], stop: asyncio.Event) -> None:
        super().__init__(pool=Any, redis=Any, batch_size=10, poll_interval=0.01)  # type: ignore[arg-type]
        self.rounds = rounds
        self.stop = stop
        self.sleep_queries = 0

    async def dispatch_once(self) -> int:
        sent, notified_meanwhile = self.rounds.pop(0)
        if notified_meanwhile:
            self.notified()
        if not self.rounds:
            self.stop.set()
        return sent

    async def _sleep_time(self) -> float:
        self.sleep_queries += 1
        return 0.0


async def test_a_round_woken_while_it_ran_goes_again_without_asking_the_next_due_time():
    stop = asyncio.Event()
    dispatcher = ScriptedDispatcher([(3, True), (2, True), (1, False), (0, False)], stop)
    await asyncio.wait_for(dispatcher.run(stop), 5)
    # Only the rounds nobody woke look up how long to sleep.
    assert dispatcher.sleep_queries == 2


async def test_a_full_batch_goes_again_without_asking_the_next_due_time():
    stop = asyncio.Event()
    dispatcher = ScriptedDispatcher([(10, False), (10, False), (4, False)], stop)
    await asyncio.wait_for(dispatcher.run(stop), 5)
    assert dispatcher.sleep_queries == 1
