"""Group commit: the turn writes that queue up behind one another share a transaction.

SQLite has one writer at a time, and a transaction's commit (the pages it changed,
written to the write-ahead log) costs more than its statements. A write that arrives
while another is being written waits for it anyway; the next writer (the leader) then
takes every write queued so far and stores them in one transaction, each in its own
savepoint, so one that fails (a chat whose reply is already running) is undone alone.
Alone, a write runs at once on its caller's thread: nothing waits to fill a batch.

An event loop never waits for the database: its writes (``submit``, ``write``) are
queued, and stored together on the loop's thread once the loop has run what it had
ready (every write of that pass in one transaction, no thread hand-off), by the leader
when somebody is writing, or by a thread of the loop's pool when the database is busy
(another process writing).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from core.direct_writes import Compiled, DirectWriter, Execute, WriterBusy

log = logging.getLogger("poolchat")

Done = Callable[[Any, "BaseException | None"], None]

_SAVEPOINT = Compiled("SAVEPOINT one_write", ())
_UNDO = Compiled("ROLLBACK TO SAVEPOINT one_write", ())
_RELEASE = Compiled("RELEASE SAVEPOINT one_write", ())


@dataclass(eq=False, slots=True)
class _Write:
    work: Callable[[Execute], Any]
    done: Done | None = None  # told the outcome once stored, on the thread that wrote it
    loop: asyncio.AbstractEventLoop | None = None  # submitted from it: nobody waits
    value: Any = None
    error: BaseException | None = None
    finished: bool = False


class GroupCommit:
    """Writes from any thread, batched while another is written; thread-safe.

    A leader stores one batch (everything queued when it starts) and steps down: a
    thread still waiting leads the next, so no caller writes for everybody else for
    long (its own reply would wait, and look abandoned).
    """

    def __init__(self, writer: DirectWriter) -> None:
        self._writer = writer
        self._queued: list[_Write] = []
        self._lock = threading.Lock()
        self._written = threading.Condition(self._lock)
        self._leading = False
        self._pass_pending = False  # a loop leads for its writes after this pass

    def run(self, work: Callable[[Execute], Any]) -> Any:
        """Store ``work`` (given the transaction's ``execute``); blocks; its value.

        Its exceptions come back as raised, the driver's as SQLAlchemy's.
        """
        if not self._writer.holds:  # a server: its own transaction, concurrently
            with self._writer.transaction() as execute:
                return work(execute)
        write = _Write(work)
        with self._lock:
            self._queued.append(write)
            while not write.finished:
                if not self._leading:
                    self._leading = True
                    break
                self._written.wait()
        if not write.finished:
            self._lead(wait=True)
        if write.error is not None:
            raise write.error
        return write.value

    def submit(self, work: Callable[[Execute], Any], done: Done) -> None:
        """From an event loop, without blocking it: ``done(value, error)`` follows, on
        the thread that stored it."""
        loop = asyncio.get_running_loop()
        write = _Write(work, done, loop)
        if not self._writer.holds:
            loop.run_in_executor(None, self._alone, write)
            return
        with self._lock:
            self._queued.append(write)
            if self._leading or self._pass_pending:
                return  # the leader's batch, the next one, or this pass's takes it
            self._pass_pending = True
        loop.call_soon(self._lead_queued)

    async def write(self, work: Callable[[Execute], Any]) -> Any:
        """``run`` for an event loop, which it never blocks."""
        loop = asyncio.get_running_loop()
        stored = loop.create_future()

        def done(value: Any, error: BaseException | None) -> None:
            if running_loop() is loop:
                _settle(stored, value, error)
            else:
                loop.call_soon_threadsafe(_settle, stored, value, error)

        self.submit(work, done)
        return await stored

    def _lead_from(self, loop: asyncio.AbstractEventLoop) -> None:
        """Lead on the loop's thread when the database is free at once; else a thread
        of its pool leads, waiting its turn."""
        if not self._lead(wait=False):
            loop.run_in_executor(None, self._lead, True)

    def _lead_queued(self) -> None:
        """On a loop: lead for writes left queued with nobody waiting on a thread."""
        with self._lock:
            self._pass_pending = False
            if self._leading or not self._queued:
                return
            self._leading = True
        self._lead_from(asyncio.get_running_loop())

    def _alone(self, write: _Write) -> None:
        self._store([write], wait=True)
        self._tell([write])

    def _lead(self, wait: bool) -> bool:
        """Store what is queued in one transaction, then step down (the caller leads).

        Returns False, still leading, when the database was busy and ``wait`` False.
        """
        with self._lock:
            batch, self._queued = self._queued, []
        try:
            self._store(batch, wait)
        except WriterBusy:
            with self._lock:
                self._queued[:0] = batch
            return False
        except BaseException as exc:  # interrupted (Ctrl-C): nothing is known stored
            for write in batch:
                write.value, write.error = None, write.error or exc
            self._tell(batch)
            raise
        self._tell(batch)
        return True

    def _store(self, batch: list[_Write], wait: bool) -> None:
        try:
            with self._writer.transaction(wait) as execute:
                if len(batch) == 1:  # its failure undoes the transaction
                    batch[0].value = batch[0].work(execute)
                    return
                for write in batch:
                    execute(_SAVEPOINT, {})
                    try:
                        write.value = write.work(execute)
                    except Exception as exc:  # noqa: BLE001 - this write's, told to it
                        execute(_UNDO, {})
                        write.error = self._writer.as_raised(exc)
                    execute(_RELEASE, {})
        except WriterBusy:
            raise
        except Exception as exc:  # noqa: BLE001 - the transaction failed: every write did
            for write in batch:
                write.value, write.error = None, write.error or exc

    def _tell(self, batch: list[_Write]) -> None:
        """Mark the batch written and step down; a waiting thread leads next, or a
        loop whose writes nobody waits for."""
        with self._lock:
            for write in batch:
                write.finished = True
            self._leading = False
            self._written.notify_all()
            waiting = [w.loop for w in self._queued]
        if waiting and None not in waiting:  # only loops' writes: wake one to lead
            try:
                waiting[0].call_soon_threadsafe(self._lead_queued)
            except RuntimeError:  # its loop is closed: shutting down
                log.warning("writes left unstored at shutdown")
        for write in batch:
            if write.done is not None:
                try:
                    write.done(write.value, write.error)
                except Exception:  # noqa: BLE001 - the leader's own write stands
                    log.exception("a stored write's follow-up failed")


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop running in this thread, or None."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:  # a thread without one
        return None


def _settle(future: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)
