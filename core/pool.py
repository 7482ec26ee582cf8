"""The shared agent pool: agents built once, lent out per message.

Each message borrows the least busy agent (round-robin among equals). An agent serves at
most ``max_concurrency`` requests at once; further requests wait in one FIFO queue, shared
by threads and asyncio tasks, for at most ``acquire_timeout`` seconds. The pool counts
what a utilisation chart needs. All methods are thread-safe.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any


class PoolTimeout(RuntimeError):
    """Every agent stayed at its concurrency limit for the whole wait."""


@dataclass(slots=True)
class AgentUsage:
    in_flight: int = 0
    served: int = 0
    errors: int = 0        # the provider or the agent failed
    stopped: int = 0       # the user stopped the reply
    interrupted: int = 0   # the reply was cut off (its stream dropped)
    busy_seconds: float = 0.0
    wait_seconds: float = 0.0


@dataclass(slots=True)
class Lease:
    """One borrowed agent; ``waited`` is the time spent queueing for it.

    The borrower may set ``outcome`` ("interrupted") before giving it back; otherwise a
    cancellation counts as stopped and any other exception as an error.
    """

    index: int
    agent: Any
    waited: float
    outcome: str | None = None


class _Waiter:
    __slots__ = ("index", "event", "loop", "future")

    def __init__(self) -> None:
        self.index: int | None = None
        self.event: threading.Event | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.future: asyncio.Future[None] | None = None

    def wake(self) -> None:
        if self.event is not None:
            self.event.set()
        else:
            assert self.loop is not None and self.future is not None
            self.loop.call_soon_threadsafe(_resolve, self.future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class AgentPool:
    """A fixed set of shared agents with per-agent concurrency limits and usage counters."""

    def __init__(self, agents: Sequence[Any], max_concurrency: int = 8,
                 acquire_timeout: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not agents:
            raise ValueError("an agent pool needs at least one agent")
        self._agents = tuple(agents)
        self.max_concurrency = max_concurrency
        self.acquire_timeout = acquire_timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._usage = [AgentUsage() for _ in self._agents]
        self._waiters: deque[_Waiter] = deque()
        self._cursor = 0
        self.timeouts = 0

    @property
    def size(self) -> int:
        return len(self._agents)

    @property
    def agents(self) -> tuple[Any, ...]:
        return self._agents

    def _claim(self, prefer: int | None = None) -> int | None:
        """Index of the least busy agent with room (lock held).

        Ties go to ``prefer`` (a session's home agent) when given, else round-robin.
        """
        best: int | None = None
        count = len(self._agents)
        start = self._cursor if prefer is None else prefer % count
        for step in range(count):
            i = (start + step) % count
            busy = self._usage[i].in_flight
            if busy < self.max_concurrency and (best is None or busy < self._usage[best].in_flight):
                best = i
        if best is not None:
            if prefer is None:
                self._cursor = (best + 1) % count
            self._usage[best].in_flight += 1
        return best

    def _try_claim(self, prefer: int | None) -> tuple[int | None, _Waiter | None]:
        with self._lock:
            if not self._waiters:
                index = self._claim(prefer)
                if index is not None:
                    return index, None
            waiter = _Waiter()
            return None, waiter

    def _hand_over(self) -> None:
        """Give free slots to queued waiters in arrival order (lock held)."""
        while self._waiters:
            index = self._claim()
            if index is None:
                return
            waiter = self._waiters.popleft()
            waiter.index = index
            try:
                waiter.wake()
            except RuntimeError:  # its event loop is closed: nobody will use the slot
                waiter.index = None
                self._usage[index].in_flight -= 1

    def _give_up(self, waiter: _Waiter) -> None:
        """A waiter timed out or was cancelled: leave the queue, or return a late grant."""
        with self._lock:
            if waiter.index is None:
                self._waiters.remove(waiter)
                self.timeouts += 1
                return
            self._usage[waiter.index].in_flight -= 1
            self._hand_over()

    def _release(self, lease: Lease, busy: float, outcome: str) -> None:
        with self._lock:
            usage = self._usage[lease.index]
            usage.in_flight -= 1
            usage.served += 1
            usage.errors += outcome == "error"
            usage.stopped += outcome == "stopped"
            usage.interrupted += outcome == "interrupted"
            usage.busy_seconds += busy
            usage.wait_seconds += lease.waited
            self._hand_over()

    def _timeout_error(self, timeout: float) -> PoolTimeout:
        return PoolTimeout(f"all {self.size} agents were busy for {timeout:g} s; try again")

    @contextmanager
    def lease(self, timeout: float | None = None, prefer: int | None = None
              ) -> Iterator[Lease]:
        """Borrow an agent from a thread; raises PoolTimeout if none frees up in time."""
        timeout = self.acquire_timeout if timeout is None else timeout
        start = self._clock()
        index, waiter = self._try_claim(prefer)
        if waiter is not None:
            waiter.event = threading.Event()
            self._enqueue(waiter)
            if not waiter.event.wait(timeout):
                with self._lock:
                    granted = waiter.index is not None
                if not granted:
                    self._give_up(waiter)
                    raise self._timeout_error(timeout)
            index = waiter.index
        assert index is not None
        with self._holding(Lease(index, self._agents[index], self._clock() - start)) as lease:
            yield lease

    @asynccontextmanager
    async def alease(self, timeout: float | None = None, prefer: int | None = None
                     ) -> AsyncIterator[Lease]:
        """Borrow an agent from asyncio without blocking the event loop."""
        timeout = self.acquire_timeout if timeout is None else timeout
        start = self._clock()
        index, waiter = self._try_claim(prefer)
        if waiter is not None:
            waiter.loop = asyncio.get_running_loop()
            waiter.future = waiter.loop.create_future()
            self._enqueue(waiter)
            try:
                await asyncio.wait_for(waiter.future, timeout)
            except TimeoutError:
                self._give_up(waiter)
                raise self._timeout_error(timeout) from None
            except asyncio.CancelledError:
                self._give_up(waiter)
                raise
            index = waiter.index
        assert index is not None
        with self._holding(Lease(index, self._agents[index], self._clock() - start)) as lease:
            yield lease

    def _enqueue(self, waiter: _Waiter) -> None:
        with self._lock:
            self._waiters.append(waiter)
            self._hand_over()  # a slot may have freed since the first try

    @contextmanager
    def _holding(self, lease: Lease) -> Iterator[Lease]:
        """Time the lease, count how it ended, and give the slot back."""
        began, outcome = self._clock(), "ok"
        try:
            yield lease
        except (asyncio.CancelledError, GeneratorExit, KeyboardInterrupt):
            outcome = lease.outcome or "stopped"
            raise
        except BaseException:
            outcome = lease.outcome or "error"
            raise
        finally:
            self._release(lease, self._clock() - began, outcome)

    def snapshot(self) -> list[dict[str, Any]]:
        """Per-agent counters, consistent with each other at one instant."""
        with self._lock:
            return [
                {
                    "agent": i,
                    "in_flight": u.in_flight,
                    "max_concurrency": self.max_concurrency,
                    "served": u.served,
                    "errors": u.errors,
                    "stopped": u.stopped,
                    "interrupted": u.interrupted,
                    "busy_seconds": round(u.busy_seconds, 6),
                    "queue_wait_seconds": round(u.wait_seconds, 6),
                }
                for i, u in enumerate(self._usage)
            ]

    def queued(self) -> int:
        with self._lock:
            return len(self._waiters)
