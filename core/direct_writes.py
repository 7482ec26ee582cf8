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
        return tuple(values[name] for name in self.positions)


Execute = Callable[[Compiled, dict[str, Any]], Any]


def every_column(table: Table, but: Column | None = None) -> dict[str, Any]:
    """A bound parameter per column, named as the column."""
    return {c.name: bindparam(c.name) for c in table.columns if c is not but}


class DirectWriter:
    """One write transaction at a time per call, on a pooled driver connection."""

    def __init__(self, engine: Engine, write_lock: AbstractContextManager[Any]) -> None:
        self.engine = engine
        self._write_lock = write_lock
        self._driver_error = engine.dialect.loaded_dbapi.Error

    def compile(self, statement: Any) -> Compiled:
        return Compiled.of(statement, self.engine.dialect)

    @contextmanager
    def transaction(self) -> Iterator[Execute]:
        with self._write_lock:
            try:
                connection = self.engine.raw_connection()
            except self._driver_error as exc:  # the server is down
                raise self._wrapped(exc, invalidated=True) from exc
            cursor = None
            try:
                cursor = connection.cursor()
                if self.engine.dialect.name == "sqlite":  # the write lock now, for it all
                    cursor.execute("BEGIN IMMEDIATE")

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
                connection.close()  # back to the pool, or away if invalidated

    def _roll_back(self, connection: Any, error: BaseException, cursor: Any) -> bool:
        """Undo a failed write; a connection lost with the server is dropped, not pooled.

        Returns whether the connection was dropped.
        """
        if isinstance(error, self._driver_error) and self.engine.dialect.is_disconnect(
                error, connection.dbapi_connection, cursor):
            connection.invalidate()
            return True
        try:
            if cursor is not None:
                cursor.close()  # an unfinished statement would block every later commit
            connection.rollback()
        except self._driver_error:
            connection.invalidate()
            return True
        return False

    def _wrapped(self, error: Exception, invalidated: bool = False) -> BaseException:
        """A driver error as SQLAlchemy raises it from any other method."""
        return DBAPIError.instance(None, None, error, self._driver_error,
                                   connection_invalidated=invalidated,
                                   dialect=self.engine.dialect)
