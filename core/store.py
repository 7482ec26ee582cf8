"""Durable chat history: sessions and an append-only messages table (SQLAlchemy Core).

SQLite by default (WAL, ``synchronous=NORMAL``: survives a process crash, may lose the
last commits on power loss), PostgreSQL by URL. Every write is one short transaction.
Message order is the order of their ids. Messages are LangChain messages, stored with
``message_to_dict`` so tool calls and metadata survive a round trip.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_core.messages import BaseMessage, message_to_dict, messages_from_dict
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Dialect, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.pool import StaticPool

from core.migrations import migrate

metadata = MetaData()

sessions = Table(
    "sessions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("owner", String(64), nullable=True),
    Column("title", String(200), nullable=False, default=""),
    Column("agent_spec", Text, nullable=True),  # JSON of AgentSpec when custom
    Column("agent_model", String(200), nullable=True),  # its model, for usage stats
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Index("ix_sessions_owner_updated", "owner", "updated_at"),
)

messages = Table(
    "messages",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("session_id", String(64), ForeignKey("sessions.id", ondelete="CASCADE"),
           nullable=False),
    Column("role", String(16), nullable=False),
    Column("content", Text, nullable=False),
    Column("payload", Text, nullable=False),  # message_to_dict JSON
    Column("status", String(16), nullable=False, default="complete"),
    Column("model", String(200), nullable=True),  # which model answered (AI messages)
    Column("custom_agent", Boolean, nullable=False, default=False),
    Column("created_at", Float, nullable=False),
    Index("ix_messages_session_id", "session_id", "id"),
)

replicas = Table(
    "replicas",
    metadata,
    Column("id", String(100), primary_key=True),
    Column("started_at", Float, nullable=False),
    Column("last_seen", Float, nullable=False),
    Column("report", Text, nullable=False),  # JSON: pool counters, sessions in memory
)

# Message status: complete, or why a reply is partial.
COMPLETE, STOPPED, INTERRUPTED = "complete", "stopped", "interrupted"


class StoreError(RuntimeError):
    """The database could not be reached or used; the message is safe to show."""


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def create_db_engine(url: str) -> Engine:
    """An engine for the URL; creates the SQLite file's folder; in-memory SQLite is shared."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StoreError("DATABASE_URL is not a valid database URL") from None
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:"):
            engine = create_engine(url, poolclass=StaticPool,
                                   connect_args={"check_same_thread": False})
        else:
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(url, connect_args={"check_same_thread": False,
                                                      "timeout": 10})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def _role(message: BaseMessage) -> str:
    return message.type  # human, ai, tool, system


class SessionStore:
    """Sessions and their messages in one database; thread-safe (one connection per call)."""

    def __init__(self, url: str, engine: Engine | None = None) -> None:
        self.url = url
        self.engine = engine or create_db_engine(url)
        self._write_lock = threading.Lock() if self.dialect == "sqlite" else nullcontext()
        self._driver_error = self.engine.dialect.loaded_dbapi.Error
        self._sql = _HotStatements(self.engine.dialect, self._insert_or_ignore(sessions))
        migrate(self.engine, metadata)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def close(self) -> None:
        self.engine.dispose()

    # -- sessions -------------------------------------------------------------------
    @contextmanager
    def _writing(self) -> Iterator[Connection]:
        """A write transaction. SQLite has one writer at a time: queueing writers here
        keeps threads out of SQLite's busy handler, which sleeps in coarse steps."""
        with self._write_lock, self.engine.begin() as conn:
            yield conn

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

    def ensure_session(self, session_id: str, owner: str | None = None, title: str = "",
                       agent_spec: dict[str, Any] | None = None) -> None:
        """Create the session row if it does not exist yet (idempotent, race-safe)."""
        with self._fast_writing() as run:
            run(self._sql.new_session,
                _session_row(session_id, time.time(), owner, title, agent_spec))

    def _insert_or_ignore(self, table: Table) -> Any:
        module = postgresql if self.dialect == "postgresql" else sqlite
        return module.insert(table).on_conflict_do_nothing()

    def get_session(self, session_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(sessions).where(sessions.c.id == session_id)).first()
        return _session_dict(row) if row else None

    def list_sessions(self, owner: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Newest first; only ``owner``'s sessions when an owner is given."""
        query = select(sessions).order_by(sessions.c.updated_at.desc()).limit(limit)
        if owner is not None:
            query = query.where(sessions.c.owner == owner)
        with self.engine.connect() as conn:
            return [_session_dict(row) for row in conn.execute(query)]

    def update_session(self, session_id: str, **values: Any) -> None:
        if "agent_spec" in values:
            values.update(_spec_columns(values.pop("agent_spec")))
        if "title" in values:
            values["title"] = values["title"][:200]
        with self._writing() as conn:
            conn.execute(update(sessions).where(sessions.c.id == session_id)
                         .values(updated_at=time.time(), **values))

    def delete_session(self, session_id: str) -> bool:
        with self._writing() as conn:
            conn.execute(delete(messages).where(messages.c.session_id == session_id))
            result = conn.execute(delete(sessions).where(sessions.c.id == session_id))
        return result.rowcount > 0

    # -- messages -------------------------------------------------------------------
    def append_messages(self, session_id: str, batch: Sequence[BaseMessage],
                        status: str = COMPLETE, model: str | None = None,
                        custom_agent: bool = False, touch: bool = True) -> list[int]:
        """Append in order, in one transaction; returns the new ids.

        ``model`` and ``custom_agent`` record which agent answered, on AI messages;
        ``touch`` moves the session's ``updated_at`` (once per turn is enough).
        """
        if not batch:
            return []
        now = time.time()
        rows = _rows(session_id, batch, status, model, custom_agent, now)
        with self._fast_writing() as run:
            ids = [run(self._sql.insert, row).fetchone()[0] for row in rows]
            if touch:
                run(self._sql.touch, {"sid": session_id, "now": now})
        return ids

    def append_after(self, session_id: str, message: BaseMessage,
                     new_session: dict[str, Any] | None = None) -> tuple[int, int | None]:
        """Append one message; return its id and the session's previous newest id.

        Both come from one transaction, so a caller holding the session's messages up to
        that previous id knows its copy is complete (no other writer came in between).
        ``new_session`` (owner, title, agent_spec) creates the session row if missing.
        """
        now = time.time()
        (row,) = _rows(session_id, [message], COMPLETE, None, False, now)
        with self._fast_writing() as run:
            if new_session is not None:
                run(self._sql.new_session, _session_row(session_id, now, **new_session))
            previous = run(self._sql.last_id, {"sid": session_id}).fetchone()[0]
            new_id = run(self._sql.insert, row).fetchone()[0]
            run(self._sql.touch, {"sid": session_id, "now": now})
        return new_id, previous

    @contextmanager
    def _fast_writing(self) -> Iterator[Callable[[_Compiled, dict[str, Any]], Any]]:
        """A write transaction on the DB-API connection itself, for the per-turn writes.

        The statements are SQLAlchemy's, compiled once for this dialect; running them on
        the driver's cursor skips SQLAlchemy's execution layer, which cost about twice
        the database's own work per message (bench). Driver errors come out as
        SQLAlchemy's, as from any other method.
        """
        with self._write_lock:
            try:
                connection = self.engine.raw_connection()
            except self._driver_error as exc:  # the server is down
                raise self._wrapped(exc, invalidated=True) from exc
            cursor = None
            try:
                cursor = connection.cursor()
                if self.dialect == "sqlite":  # take the write lock now, for the whole turn
                    cursor.execute("BEGIN IMMEDIATE")

                def run(statement: _Compiled, values: dict[str, Any]) -> Any:
                    cursor.execute(statement.sql, statement.parameters(values))
                    return cursor

                yield run
                cursor.close()
                connection.commit()
            except self._driver_error as exc:
                raise self._wrapped(exc, self._roll_back(connection, exc, cursor)) from exc
            except BaseException as exc:  # not the database's fault: undo, keep the error
                self._roll_back(connection, exc, cursor)
                raise
            finally:
                connection.close()  # back to the pool, or away if invalidated

    def load_messages(self, session_id: str, last: int | None = None) -> list[BaseMessage]:
        """The session's messages in order; only the ``last`` N when given."""
        return [m for m, _ in self.load_messages_with_status(session_id, last)]

    def load_messages_with_status(self, session_id: str, last: int | None = None
                                  ) -> list[tuple[BaseMessage, str]]:
        return [(m, status) for _, m, status in self.load_rows(session_id, last)]

    def load_rows(self, session_id: str, last: int | None = None
                  ) -> list[tuple[int, BaseMessage, str]]:
        """(id, message, status) in order; the newest ``last`` when given."""
        query = select(messages.c.id, messages.c.payload, messages.c.status).where(
            messages.c.session_id == session_id)
        if last is None:
            query = query.order_by(messages.c.id)
        else:
            query = query.order_by(messages.c.id.desc()).limit(last)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        if last is not None:
            rows.reverse()
        loaded = messages_from_dict([json.loads(payload) for _, payload, _ in rows])
        return [(row[0], message, row[2]) for row, message in zip(rows, loaded)]

    def delete_messages_after(self, session_id: str, message_id: int) -> int:
        """Remove the session's messages newer than ``message_id`` (regenerating a reply)."""
        with self._writing() as conn:
            result = conn.execute(delete(messages).where(
                messages.c.session_id == session_id, messages.c.id > message_id))
        return result.rowcount

    def count_messages(self, session_id: str | None = None) -> int:
        query = select(func.count()).select_from(messages)
        if session_id is not None:
            query = query.where(messages.c.session_id == session_id)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    # -- aggregates -----------------------------------------------------------------
    def count_sessions(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(sessions)).scalar_one())

    def count_custom_sessions(self) -> int:
        query = select(func.count()).select_from(sessions).where(
            sessions.c.agent_spec.is_not(None))
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def usage_by_agent(self, shared_model: str = "") -> list[dict[str, Any]]:
        """Sessions and assistant messages per (custom or shared, model).

        Sessions on the shared pool have no model of their own: they count under
        ``shared_model``.
        """
        by_session = select(sessions.c.agent_model, func.count()).group_by(
            sessions.c.agent_model)
        by_message = select(messages.c.custom_agent, messages.c.model, func.count()).where(
            messages.c.role == "ai").group_by(messages.c.custom_agent, messages.c.model)
        usage: dict[tuple[bool, str], dict[str, Any]] = {}

        def entry(custom: bool, model: str | None) -> dict[str, Any]:
            key = (custom, model or "")
            return usage.setdefault(key, {"agent": "custom" if custom else "shared",
                                          "model": model or "", "sessions": 0,
                                          "messages": 0})

        with self.engine.connect() as conn:
            for model, count in conn.execute(by_session):
                entry(model is not None, model or shared_model)["sessions"] += count
            for custom, model, count in conn.execute(by_message):
                entry(bool(custom), model)["messages"] += count
        return sorted(usage.values(), key=lambda u: (u["agent"], u["model"]))

    # -- replicas and retention --------------------------------------------------------
    def publish_heartbeat(self, replica_id: str, started_at: float,
                          report: dict[str, Any]) -> None:
        """Insert or refresh this replica's row (one small write per interval)."""
        now = time.time()
        values = {"last_seen": now, "report": json.dumps(report)}
        with self._writing() as conn:
            updated = conn.execute(update(replicas).where(replicas.c.id == replica_id)
                                   .values(**values)).rowcount
            if not updated:
                conn.execute(self._insert_or_ignore(replicas).values(
                    id=replica_id, started_at=started_at, **values))

    def heartbeats(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(replicas).order_by(replicas.c.started_at)).all()
        return [{"replica": r.id, "started_at": r.started_at, "last_seen": r.last_seen,
                 **json.loads(r.report)} for r in rows]

    def forget_replicas_seen_before(self, cutoff: float) -> int:
        with self._writing() as conn:
            return conn.execute(delete(replicas).where(replicas.c.last_seen < cutoff)).rowcount

    def delete_sessions_idle_since(self, cutoff: float) -> int:
        """Delete sessions untouched since ``cutoff``; their messages go by cascade.

        One statement, so the test of ``updated_at`` and the delete are atomic: a session
        another replica writes to at the same moment has a newer ``updated_at`` and stays.
        """
        with self._writing() as conn:
            return conn.execute(delete(sessions).where(sessions.c.updated_at < cutoff)
                                ).rowcount


@dataclass(frozen=True, slots=True)
class _Compiled:
    """A statement as the driver takes it: SQL text and how to lay out its values."""

    sql: str
    positions: tuple[str, ...] | None  # names in order for positional drivers (SQLite)

    @classmethod
    def of(cls, statement: Any, dialect: Dialect) -> _Compiled:
        compiled = statement.compile(dialect=dialect)
        positions = tuple(compiled.positiontup) if compiled.positional else None
        return cls(compiled.string, positions)

    def parameters(self, values: dict[str, Any]) -> Any:
        if self.positions is None:
            return values
        return tuple(values[name] for name in self.positions)


class _HotStatements:
    """The statements every turn runs, compiled once per store."""

    def __init__(self, dialect: Dialect, insert_session: Any) -> None:
        self.insert = _Compiled.of(insert(messages).values(
            _every_column(messages, but=messages.c.id)).returning(messages.c.id), dialect)
        self.touch = _Compiled.of(update(sessions).where(sessions.c.id == bindparam("sid"))
                                  .values(updated_at=bindparam("now")), dialect)
        self.last_id = _Compiled.of(select(func.max(messages.c.id)).where(
            messages.c.session_id == bindparam("sid")), dialect)
        self.new_session = _Compiled.of(insert_session.values(_every_column(sessions)),
                                        dialect)


def _every_column(table: Table, but: Column | None = None) -> dict[str, Any]:
    """A bound parameter per column, named as the column (``_rows``, ``_session_row``)."""
    return {c.name: bindparam(c.name) for c in table.columns if c is not but}


def _session_row(session_id: str, now: float, owner: str | None = None, title: str = "",
                 agent_spec: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"id": session_id, "owner": owner, "title": title[:200],
            **_spec_columns(agent_spec), "created_at": now, "updated_at": now}


def _rows(session_id: str, batch: Sequence[BaseMessage], status: str, model: str | None,
          custom_agent: bool, now: float) -> list[dict[str, Any]]:
    return [{
        "session_id": session_id, "role": _role(m), "content": m.text,
        "payload": json.dumps(message_to_dict(m), default=str), "status": status,
        "model": model if m.type == "ai" else None,
        "custom_agent": custom_agent and m.type == "ai", "created_at": now,
    } for m in batch]


def _spec_columns(spec: dict[str, Any] | None) -> dict[str, Any]:
    return {"agent_spec": json.dumps(spec) if spec else None,
            "agent_model": spec["model"] if spec else None}


def _session_dict(row: Any) -> dict[str, Any]:
    data = dict(row._mapping)
    data["agent_spec"] = json.loads(data["agent_spec"]) if data["agent_spec"] else None
    return data
