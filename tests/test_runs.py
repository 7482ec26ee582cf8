"""A run's events: numbered, readable by anyone from any point, live until it ends."""

import threading
import time

from core.runs import COMPLETE, Run, RunWorker
from core.turns import Token


def test_readers_get_events_from_where_they_are_and_learn_when_it_ends():
    run = Run("r", "s", 1)
    run.add(Token("a"))
    assert run.read(0, timeout=0) == ([Token("a")], False)
    assert run.read(1, timeout=0) == ([], False)
    run.add(Token("b"))
    run.end(COMPLETE)
    assert run.read(1) == ([Token("b")], True)
    assert list(run.follow()) == [Token("a"), Token("b")] and run.text == "ab"


def test_a_waiting_reader_wakes_on_the_next_event():
    run = Run("r", "s", 1)
    seen = []
    reader = threading.Thread(target=lambda: seen.extend(run.follow()))
    reader.start()
    run.add(Token("x"))
    run.end(COMPLETE)
    reader.join(10)
    assert seen == [Token("x")] and not reader.is_alive()


def test_a_reader_waiting_long_is_woken_by_an_event_alone():
    run = Run("r", "s", 1)
    got = []
    reader = threading.Thread(target=lambda: got.append(run.read(0, timeout=60)))
    reader.start()
    until_waiting(run)
    run.add(Token("x"))
    reader.join(10)
    assert got == [([Token("x")], False)]


def until_waiting(run, timeout=10.0):
    """Until a reader is waiting on the run (its condition has a waiter)."""
    deadline = time.monotonic() + timeout
    while not run._changed._waiters:
        assert time.monotonic() < deadline, "no reader waited"
        time.sleep(0.001)


def test_the_worker_runs_coroutines_on_its_own_loop_and_closes_cleanly():
    import asyncio

    worker = RunWorker(io_threads=2)

    async def answer() -> int:
        await asyncio.sleep(0)
        return 42

    assert worker.submit(answer()).result(10) == 42
    worker.close()
    assert not worker.alive
