"""The dispatcher's loop: when it waits for the next due time, and when it goes straight on."""

from __future__ import annotations

import asyncio
from typing import Any

from taskforge.scheduler.dispatcher import LINGER_MIN_SENT, Dispatcher


class ScriptedDispatcher(Dispatcher):
    """Rounds that return scripted counts, optionally woken (a NOTIFY) while they run."""

    def __init__(
        self, rounds: list[tuple[int, bool]], stop: asyncio.Event, batch_size: int = 10
    ) -> None:
        super().__init__(
            pool=Any,  # type: ignore[arg-type]
            redis=Any,  # type: ignore[arg-type]
            batch_size=batch_size,
            poll_interval=0.01,
            linger=0.001,
        )
        self.rounds = rounds
        self.stop = stop
        self.waits = 0
        self.lingered_after: list[int] = []
        self.last_sent = 0

    async def _session_round(self) -> int:
        sent, notified_meanwhile = self.rounds.pop(0)
        if notified_meanwhile:
            self.notified()
        if not self.rounds:
            self.stop.set()
        self.last_sent = sent
        return sent

    async def _linger(self, stop: asyncio.Event) -> None:
        self.lingered_after.append(self.last_sent)
        await super()._linger(stop)

    def _sleep_time(self) -> float:
        self.waits += 1
        return 0.0


async def test_a_round_woken_while_it_ran_goes_again_without_waiting():
    stop = asyncio.Event()
    dispatcher = ScriptedDispatcher([(3, True), (2, True), (1, False), (0, False)], stop)
    await asyncio.wait_for(dispatcher.run(stop), 5)
    # Only the rounds nobody woke wait.
    assert dispatcher.waits == 2


async def test_a_full_batch_goes_again_without_waiting():
    stop = asyncio.Event()
    dispatcher = ScriptedDispatcher([(10, False), (10, False), (4, False)], stop)
    await asyncio.wait_for(dispatcher.run(stop), 5)
    assert dispatcher.waits == 1


async def test_only_rounds_that_sent_many_but_not_a_full_batch_linger():
    stop = asyncio.Event()
    many = LINGER_MIN_SENT
    rounds = [(1, True), (many - 1, True), (many, True), (many + 5, False), (100, True), (0, False)]
    dispatcher = ScriptedDispatcher(rounds, stop, batch_size=100)
    await asyncio.wait_for(dispatcher.run(stop), 5)
    # A trickle (1 job a round) never waits; a full batch goes straight on (more are due).
    assert dispatcher.lingered_after == [many, many + 5]


async def test_no_linger_when_it_is_turned_off():
    stop = asyncio.Event()
    dispatcher = ScriptedDispatcher([(50, True), (50, False)], stop, batch_size=100)
    dispatcher.linger = 0.0
    await asyncio.wait_for(dispatcher.run(stop), 5)
    assert dispatcher.lingered_after == []
