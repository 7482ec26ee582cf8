"""Write transactions on the DB-API connection itself, for the writes every turn makes.

The statements are SQLAlchemy's, compiled once per dialect; running them on the driver's
cursor skips SQLAlchemy's execution layer, which cost about twice the database's own work
per message (bench). Driver errors come out as SQLAlchemy's, as from any other query.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, Table, bindparam
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.exc import DBAPIError


@dataclass(frozen=True, slots=True)
class Compiled:
    """A statement as the driver takes it: SQL text and how to lay out its values."""

    sql: str
    positions: tuple[str, ...] | None  # names in order for positional drivers (SQLite)
    constants: tuple[tuple[str, Any], ...] = ()  # values written in the statement

    @classmethod
    def of(cls, statement: Any, dialect: Dialect) -> Compiled:
        compiled = statement.compile(dialect=dialect)
        positions = tuple(compiled.positiontup) if compiled.positional else None
        constants = tuple((name, bind.value) for name, bind in compiled.binds.items()
                          if bind.value is not None and not bind.required)
        return cls(compiled.string, positions, constants)

    def parameters(self, values: dict[str, Any]) -> Any:
        if self.constants:
            values = {**dict(self.constants), **values}
        if self.positions is None:
            return values
        return tuple(map(values.__getitem__, self.positions))


BUSY_TIMEOUT_MS = 10_000  # how long a SQLite writer waits for another process's write


class WriterBusy(Exception):
    """The write cannot start without waiting (asked not to wait)."""


Execute = Callable[[Compiled, dict[str, Any]], Any]


def every_column(table: Table, but: Column | None = None) -> dict[str, Any]:
    """A bound parameter per column, named as the column."""
    return {c.name: bindparam(c.name) for c in table.columns if c is not but}


class DirectWriter:
    """One write transaction at a time per call, on a pooled driver connection.

    With ``hold`` (SQLite: one writer at a time anyway) the writer keeps one connection:
    a pooled one would be checked out and reset on every call, and its page cache,
    stale after another connection's write, read again (about half a turn's write time,
    bench).
    """

    def __init__(self, engine: Engine, write_lock: AbstractContextManager[Any],
                 hold: bool = False) -> None:
        self.engine = engine
        self._write_lock = write_lock
        self._driver_error = engine.dialect.loaded_dbapi.Error
        self._hold = hold
        self._held: Any = None

    @property
    def holds(self) -> bool:
        """One connection, one writer at a time (SQLite)."""
        return self._hold

    def as_raised(self, error: Exception) -> Exception:
        """An error as ``transaction`` raises it: the driver's as SQLAlchemy's."""
        if isinstance(error, self._driver_error):
            return self._wrapped(error)  # type: ignore[return-value]
        return error

    def compile(self, statement: Any) -> Compiled:
        return Compiled.of(statement, self.engine.dialect)

    @contextmanager
    def transaction(self, wait: bool = True) -> Iterator[Execute]:
        """A write transaction. With ``wait`` False it raises ``WriterBusy`` at once
        unless it can run without waiting: on the held connection (SQLite) with no other
        writer in this process nor in another one (an event loop may then write itself,
        without a thread hop)."""
        with self._locked(wait):
            connection = self._connection()
            cursor = None
            try:
                cursor = connection.cursor()
                if self.engine.dialect.name == "sqlite":  # the write lock now, for it all
                    self._begin(cursor, wait, held=connection is self._held)

                def execute(statement: Compiled, values: dict[str, Any]) -> Any:
                    cursor.execute(statement.sql, statement.parameters(values))
                    return cursor

                yield execute
                cursor.close()
                connection.commit()
            except self._driver_error as exc:
                raise self._wrapped(exc, self._roll_back(connection, exc, cursor)) from exc
            except BaseException as exc:  # not the database's fault: undo, keep the error
                self._roll_back(connection, exc, cursor)
                raise
            finally:
                if connection is not self._held:
                    connection.close()  # back to the pool, or away if invalidated

    @contextmanager
    def _locked(self, wait: bool) -> Iterator[None]:
        if wait:
            with self._write_lock:
                yield
            return
        lock = self._write_lock
        if not self._hold or not lock.acquire(blocking=False):  # type: ignore[attr-defined]
            raise WriterBusy()
        try:
            yield
        finally:
            lock.release()  # type: ignore[attr-defined]

    def _begin(self, cursor: Any, wait: bool, held: bool) -> None:
        """BEGIN IMMEDIATE. The held connection never waits for another process's
        write (its busy timeout is 0, set once): the event loop's writes, the most
        frequent, begin in one statement; a writer that may wait raises the timeout
        around its own BEGIN. (In WAL mode nothing after the BEGIN waits for a lock.)"""
        if not wait:
            try:
                cursor.execute("BEGIN IMMEDIATE")
            except self._driver_error as exc:
                if "locked" in str(exc) or "busy" in str(exc):
                    raise WriterBusy() from None
                raise
            return
        if not held:  # a pooled connection keeps the engine's timeout
            cursor.execute("BEGIN IMMEDIATE")
            return
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        try:
            cursor.execute("BEGIN IMMEDIATE")
        finally:
            cursor.execute("PRAGMA busy_timeout=0")

    def _connection(self) -> Any:
        """The held connection, or one from the pool (called under the write lock)."""
        if self._held is not None:
            return self._held
        try:
            connection = self.engine.raw_connection()
        except self._driver_error as exc:  # the server is down
            raise self._wrapped(exc, invalidated=True) from exc
        if self._hold:
            if self.engine.dialect.name == "sqlite":
                cursor = connection.cursor()
                cursor.execute("PRAGMA busy_timeout=0")  # see _begin
                cursor.close()
            self._held = connection
        return connection

    def close(self) -> None:
        """Give the held connection back (before the engine is disposed)."""
        with self._write_lock:
            held, self._held = self._held, None
            if held is not None:
                held.close()

    def _roll_back(self, connection: Any, error: BaseException, cursor: Any) -> bool:
        """Undo a failed write; a connection lost with the server is dropped, not pooled.

        Returns whether the connection was dropped.
        """
        if isinstance(error, self._driver_error) and self.engine.dialect.is_disconnect(
                error, connection.dbapi_connection, cursor):
            self._drop(connection)
            return True
        try:
            if cursor is not None:
                cursor.close()  # an unfinished statement would block every later commit
            connection.rollback()
        except self._driver_error:
            self._drop(connection)
            return True
        return False

    def _drop(self, connection: Any) -> None:
        """A broken connection is never used again; the next call takes a new one."""
        connection.invalidate()
        if connection is self._held:
            self._held = None  # closed by the caller, as any other

    def _wrapped(self, error: Exception, invalidated: bool = False) -> BaseException:
        """A driver error as SQLAlchemy raises it from any other method."""
        return DBAPIError.instance(None, None, error, self._driver_error,
                                   connection_invalidated=invalidated,
                                   dialect=self.engine.dialect)
