"""Runs: one answer being generated, owned by core rather than by a page.

A ``Run`` has an id, its conversation, the user message it answers, a status and the
events so far (tokens, tool steps), numbered in order, so any number of readers can
attach at any point and follow it live (``Run.read``). Runs execute as tasks on one
asyncio event loop in a background thread (``RunWorker``): a thousand streaming replies
cost no thread each, and Stop is a task cancellation that closes the provider's stream at
once. A page that goes away (reload, closed tab, a cleared cache) only stops reading.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from core.schema import COMPLETE, INTERRUPTED, RUNNING, STOPPED
from core.turns import Event, Token

log = logging.getLogger("poolchat")

CHECKPOINT_EVERY = 1.0   # seconds between saves of a running reply's text
STALE_AFTER = 10.0       # a running run not checkpointed for this long has lost its owner
STOP_WAIT = 2.0          # seconds ``stop`` waits for the partial reply to be stored

__all__ = ["COMPLETE", "INTERRUPTED", "RUNNING", "STOPPED", "Run", "RunWorker"]


@dataclass(eq=False)
class Run:
    """One answer being generated. Thread-safe: written by the worker, read anywhere."""

    id: str
    session_id: str
    user_message_id: int
    agent: str = ""
    started_at: float = field(default_factory=time.time)
    status: str = RUNNING
    error: str | None = None
    retryable: bool = True
    reply: str = ""  # the final answer's text, once complete
    answered: bool = False  # the model's first event arrived
    finished_at: float | None = None  # time.monotonic() when it ended
    ticket: Any = None  # while it waits for a pool member: its place in the queue
    regenerating: bool = False  # it answers its question again (the old answer waits)
    _events: list[Event] = field(default_factory=list, repr=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    _changed: threading.Condition = field(init=False, repr=False)
    _readers_waiting: int = field(default=0, repr=False)
    _done: threading.Event = field(default_factory=threading.Event, repr=False)
    future: concurrent.futures.Future[None] | None = field(default=None, repr=False)
    task: asyncio.Task[None] | None = field(default=None, repr=False)  # started on the loop

    def __post_init__(self) -> None:
        self._changed = threading.Condition(self._lock)

    # -- written by the worker --------------------------------------------------------
    def wait_in(self, ticket: Any) -> None:
        """The run waits in the pool's queue with this ticket (None: it does not)."""
        self.ticket = ticket

    def add(self, event: Event) -> None:
        """Called for every token: readers are woken only when one waits."""
        with self._lock:
            self._events.append(event)
            if self._readers_waiting:
                self._changed.notify_all()

    def end(self, status: str, error: str | None = None, retryable: bool = True) -> None:
        with self._changed:
            self.status, self.error, self.retryable = status, error, retryable
            self.finished_at = time.monotonic()
            self._done.set()
            self._changed.notify_all()

    # -- read by anyone ---------------------------------------------------------------
    @property
    def finished(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the run has ended and its outcome is stored; False on timeout."""
        return self._done.wait(timeout)

    def read(self, after: int = 0, timeout: float | None = None) -> tuple[list[Event], bool]:
        """Events numbered ``after`` and later, waiting up to ``timeout`` for one; and
        whether the run has ended (then no event will follow)."""
        with self._changed:
            if len(self._events) <= after and not self._done.is_set() and timeout != 0:
                self._readers_waiting += 1
                try:
                    self._changed.wait(timeout)
                finally:
                    self._readers_waiting -= 1
            return self._events[after:], self._done.is_set()

    def follow(self, poll: float = 0.5) -> Iterator[Event]:
        """Every event from the first, live until the run ends (a reader's loop)."""
        seen = 0
        while True:
            events, done = self.read(seen, timeout=poll)
            seen += len(events)
            yield from events
            if done and not events:
                return

    @property
    def text(self) -> str:
        """The reply text streamed so far."""
        with self._changed:
            return "".join(e.text for e in self._events if isinstance(e, Token))


class RunWorker:
    """One asyncio event loop in a daemon thread, where every run is a task.

    Blocking work a run needs (database writes, a synchronous model) goes to the loop's
    thread pool, so the loop itself only ever waits on I/O.
    """

    def __init__(self, io_threads: int = 32) -> None:
        self.loop = asyncio.new_event_loop()
        self.loop.set_default_executor(ThreadPoolExecutor(io_threads,
                                                          thread_name_prefix="poolchat-io"))
        self._thread = threading.Thread(target=self._serve, name="poolchat-runs",
                                        daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, coroutine: Coroutine[Any, Any, Any]) -> concurrent.futures.Future[Any]:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self.loop.is_closed()

    def close(self, timeout: float = 5.0) -> None:
        """Cancel what still runs, let it store its partial replies, stop the loop."""
        if self.loop.is_closed():
            return

        async def drain() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=timeout)

        try:
            asyncio.run_coroutine_threadsafe(drain(), self.loop).result(timeout + 1)
        except Exception:  # noqa: BLE001 - shutting down regardless
            log.warning("runs did not finish within %s s at shutdown", timeout)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self.loop.run_until_complete(self.loop.shutdown_default_executor())
            self.loop.close()
