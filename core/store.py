"""Durable chat history: sessions and an append-only messages table (SQLAlchemy Core).

SQLite by default (WAL, ``synchronous=NORMAL``: survives a process crash, may lose the
last commits on power loss), PostgreSQL by URL. Every write is one short transaction.
Message order is the order of their ids. Messages are LangChain messages, stored with
``message_to_dict`` so tool calls and metadata survive a round trip.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_core.messages import (
    BaseMessage,
    messages_from_dict,
)
from sqlalchemy import (
    Column,
    String,
    cast,
    create_engine,
    delete,
    event,
    exists,
    func,
    literal,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError
from sqlalchemy.pool import StaticPool
from sqlalchemy.schema import Table

from core.branches import shown_path, siblings
from core.direct_writes import BUSY_TIMEOUT_MS, DirectWriter
from core.limits import FEEDBACK_COMMENT_CHARS, TITLE_MAX_CHARS
from core.migrations import migrate
from core.run_log import RunLog
from core.schema import (
    COMPLETE,
    INTERRUPTED,
    RUNNING,
    STOPPED,
    feedback,
    messages,
    metadata,
    replaced_feedback,
    replicas,
    runs,
    sessions,
    usage,
)
from core.turn_sql import (
    RUNS_RUNNING,
    TurnStatements,
    insert_chain,
    message_rows,
    session_row,
    spec_columns,
)

__all__ = ["COMPLETE", "INTERRUPTED", "RUNNING", "STOPPED", "SessionStore", "StoreError",
           "StoredMessage", "metadata"]


class StoreError(RuntimeError):
    """The database could not be reached or used; the message is safe to show."""


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A message as the chat page and exports show it: when, by which model, how it
    ended, and the feedback given on it."""

    id: int
    message: BaseMessage
    status: str
    created_at: float
    model: str | None
    custom_agent: bool
    score: int | None = None     # feedback: 1 up, 0 down
    comment: str = ""
    version: int | None = None   # the answering member's version (a reply's, once ended)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
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
                                                      "timeout": BUSY_TIMEOUT_MS / 1000})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


class SessionStore:
    """Sessions and their messages in one database; thread-safe (one connection per call)."""

    def __init__(self, url: str, engine: Engine | None = None) -> None:
        self.url = url
        self.engine = engine or create_db_engine(url)
        self._write_lock = threading.Lock() if self.dialect == "sqlite" else nullcontext()
        self._direct = DirectWriter(self.engine, self._write_lock,
                                    hold=self.dialect == "sqlite")
        self._sql = TurnStatements(self._direct, self._insert_or_ignore(sessions))
        self.runs = RunLog(self.engine, self._direct, self._sql, self._writing)
        migrate(self.engine, metadata)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def close(self) -> None:
        self._direct.close()
        self.engine.dispose()

    # -- sessions -------------------------------------------------------------------
    @contextmanager
    def _writing(self) -> Iterator[Connection]:
        """A write transaction. SQLite has one writer at a time: queueing writers here
        keeps threads out of SQLite's busy handler, which sleeps in coarse steps."""
        with self._write_lock, self.engine.begin() as conn:
            yield conn

    def ensure_session(self, session_id: str, owner: str | None = None, title: str = "",
                       agent_spec: dict[str, Any] | None = None) -> None:
        """Create the session row if it does not exist yet (idempotent, race-safe)."""
        with self._direct.transaction() as run:
            run(self._sql.new_session,
                session_row(session_id, time.time(), owner, title, agent_spec))

    def _dialect_insert(self, table: Table) -> Any:
        """An INSERT with this database's ON CONFLICT clauses."""
        return (postgresql if self.dialect == "postgresql" else sqlite).insert(table)

    def _insert_or_ignore(self, table: Table) -> Any:
        return self._dialect_insert(table).on_conflict_do_nothing()

    def _upsert(self, table: Table, key: list[Column], given: dict[str, Any]) -> Any:
        """INSERT, or on a row with the same ``key`` set only the ``given`` columns
        to the values inserted."""
        statement = self._dialect_insert(table)
        return statement.on_conflict_do_update(
            index_elements=key, set_={name: statement.excluded[name] for name in given})

    def get_session(self, session_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(sessions).where(sessions.c.id == session_id)).first()
        return _session_dict(row) if row else None

    def change_mark(self, session_id: str, owner: str | None) -> tuple[Any, ...]:
        """A value that changes whenever what a chat page shows changes in the database:
        the chat's row (title, branch, agent, last use), its newest message, its
        feedback, and the owner's list of chats. An idle tab compares it to catch up with
        other tabs and replicas; two queries of indexed lookups, cheap enough to ask
        every few seconds."""
        chat = select(sessions.c.updated_at, sessions.c.title, sessions.c.branch_id,
                      sessions.c.agent_spec,
                      select(func.max(messages.c.id)).where(
                          messages.c.session_id == session_id).scalar_subquery(),
                      # feedback given (or cleared) in another tab
                      select(func.count()).where(
                          feedback.c.session_id == session_id).scalar_subquery(),
                      select(func.max(feedback.c.updated_at)).where(
                          feedback.c.session_id == session_id).scalar_subquery(),
                      ).where(sessions.c.id == session_id)
        mine = select(func.count(), func.max(sessions.c.updated_at)).where(
            sessions.c.owner == owner)
        with self.engine.connect() as conn:
            return (tuple(conn.execute(chat).first() or ()),
                    tuple(conn.execute(mine).one()) if owner is not None else ())

    def list_sessions(self, owner: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Newest first; only ``owner``'s sessions when an owner is given."""
        query = select(sessions).order_by(sessions.c.updated_at.desc()).limit(limit)
        if owner is not None:
            query = query.where(sessions.c.owner == owner)
        with self.engine.connect() as conn:
            return [_session_dict(row) for row in conn.execute(query)]

    def search_sessions(self, owner: str | None, words: str, limit: int = 50
                        ) -> list[dict[str, Any]]:
        """``owner``'s sessions whose title or any message contains every word, newest
        first (case-insensitive ``LIKE`` on SQLite, ``ILIKE`` on PostgreSQL; bounded)."""
        query = select(sessions).order_by(sessions.c.updated_at.desc()).limit(limit)
        if owner is not None:
            query = query.where(sessions.c.owner == owner)
        for word in words.split()[:8]:
            pattern = "%" + re.sub(r"([\\%_])", r"\\\1", word[:100]) + "%"
            query = query.where(sessions.c.title.ilike(pattern, escape="\\") | exists().where(
                messages.c.session_id == sessions.c.id,
                messages.c.role.in_(("human", "ai")),
                messages.c.content.ilike(pattern, escape="\\")))
        with self.engine.connect() as conn:
            return [_session_dict(row) for row in conn.execute(query)]

    def update_session(self, session_id: str, touch: bool = False, **values: Any) -> None:
        """Change a session's title or agent; ``touch`` also moves it up the list (a
        rename does not)."""
        if "agent_spec" in values:
            values.update(spec_columns(values.pop("agent_spec")))
        if "title" in values:
            values["title"] = values["title"][:TITLE_MAX_CHARS]
        if touch:
            values["updated_at"] = time.time()
        if not values:
            return
        with self._writing() as conn:
            conn.execute(update(sessions).where(sessions.c.id == session_id).values(**values))

    def delete_session(self, session_id: str) -> bool:
        with self._writing() as conn:
            conn.execute(delete(feedback).where(feedback.c.session_id == session_id))
            conn.execute(delete(replaced_feedback)
                         .where(replaced_feedback.c.session_id == session_id))
            # messages before runs, as every writer takes them (a checkpoint elsewhere)
            conn.execute(delete(messages).where(messages.c.session_id == session_id))
            conn.execute(delete(runs).where(runs.c.session_id == session_id))
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
        rows = message_rows(session_id, batch, status, model, custom_agent, now)
        with self._direct.transaction() as run:
            parent = run(self._sql.last_id, {"sid": session_id}).fetchone()[0]
            ids = insert_chain(run, self._sql.insert, rows, parent)
            if touch:
                run(self._sql.touch, {"sid": session_id, "now": now})
        return ids

    def load_messages(self, session_id: str, last: int | None = None) -> list[BaseMessage]:
        """The session's messages in order; only the ``last`` N when given."""
        return [m for m, _ in self.load_messages_with_status(session_id, last)]

    def load_messages_with_status(self, session_id: str, last: int | None = None
                                  ) -> list[tuple[BaseMessage, str]]:
        return [(m, status) for _, m, status in self.load_rows(session_id, last)]

    def load_rows(self, session_id: str, last: int | None = None
                  ) -> list[tuple[int, BaseMessage, str]]:
        """(id, message, status) of the branch shown, in order; the newest ``last``."""
        query = select(messages.c.id, messages.c.payload, messages.c.status)
        rows = self._shown(query, session_id, last)
        loaded = messages_from_dict([json.loads(payload) for _, payload, _ in rows])
        return [(row[0], message, row[2]) for row, message in zip(rows, loaded)]

    def load_stored(self, session_id: str, last: int | None = None) -> list[StoredMessage]:
        """The branch shown with each message's time, model and feedback, in order (the
        newest ``last``)."""
        query = (select(messages.c.id, messages.c.payload, messages.c.status,
                        messages.c.created_at, messages.c.model, messages.c.custom_agent,
                        feedback.c.score, feedback.c.comment, usage.c.agent_version)
                 .outerjoin(feedback, feedback.c.message_id == messages.c.id)
                 .outerjoin(usage, usage.c.run_id == messages.c.run_id))
        rows = self._shown(query, session_id, last)
        loaded = messages_from_dict([json.loads(r.payload) for r in rows])
        return [StoredMessage(r.id, m, r.status, r.created_at, r.model, bool(r.custom_agent),
                              r.score, r.comment or "", r.agent_version)
                for r, m in zip(rows, loaded)]

    def _shown(self, query: Any, session_id: str, last: int | None) -> list[Any]:
        """Rows of ``query`` on the branch shown, in order (the newest ``last``)."""
        with self.engine.connect() as conn:
            shown = self._shown_ids(conn, session_id)
            if shown is None:  # never edited: one line, every message
                query = query.where(messages.c.session_id == session_id,
                                    ~self._being_replaced(session_id))
            else:
                query = query.where(messages.c.id.in_(shown[-last:] if last else shown))
            if last is None:
                return conn.execute(query.order_by(messages.c.id)).all()
            rows = conn.execute(query.order_by(messages.c.id.desc()).limit(last)).all()
        rows.reverse()
        return rows

    @staticmethod
    def _being_replaced(session_id: str) -> Any:
        """Rows a regenerate running now is to replace: below its question and not its
        own. Its new reply and the old answer are both the question's children, so a
        chat never edited (one line) would show them as one; until the run ends and
        drops the old answer (``RunLog``), the new one is the answer shown."""
        return exists().where(runs.c.session_id == session_id, runs.c.status == RUNNING,
                              messages.c.id > runs.c.user_message_id,
                              messages.c.run_id.is_distinct_from(runs.c.id))

    def _shown_ids(self, conn: Connection, session_id: str) -> list[int] | None:
        """The branch shown, or None for a chat never edited (one line: every message)."""
        branch = self._branch_of(conn, session_id)
        if branch is None:
            return None
        return shown_path(self._links(conn, session_id), branch)

    @staticmethod
    def _branch_of(conn: Connection, session_id: str) -> int | None:
        return conn.execute(select(sessions.c.branch_id).where(
            sessions.c.id == session_id)).scalar()

    @staticmethod
    def _links(conn: Connection, session_id: str) -> list[tuple[int, int | None]]:
        return [tuple(r) for r in conn.execute(select(messages.c.id, messages.c.parent_id)
                                               .where(messages.c.session_id == session_id))]

    def versions(self, session_id: str, shown: Sequence[int]) -> dict[int, list[int]]:
        """For each shown message that has other versions (edits), all of them in order."""
        with self.engine.connect() as conn:
            if self._branch_of(conn, session_id) is None:  # never edited: no versions
                return {}
            return siblings(self._links(conn, session_id), shown)

    def choose_branch(self, session_id: str, message_id: int) -> bool:
        """Show the branch through one of the session's messages (a version switcher).
        False, changing nothing, while a reply is being written in the chat: checked in
        the same transaction, so a message stored meanwhile is never left on a branch
        no longer shown."""
        with self._writing() as conn:
            if self.dialect == "postgresql":  # a start being stored writes the chat's
                # row: wait for it, then see its run (a new statement, a new snapshot)
                conn.execute(select(sessions.c.id).where(sessions.c.id == session_id)
                             .with_for_update())
            if conn.execute(select(runs.c.id).where(runs.c.session_id == session_id,
                                                    RUNS_RUNNING)).first() is not None:
                return False
            found = conn.execute(select(messages.c.id).where(
                messages.c.id == message_id, messages.c.session_id == session_id)).first()
            if found is not None:
                conn.execute(update(sessions).where(sessions.c.id == session_id)
                             .values(branch_id=message_id))
        return found is not None

    def set_feedback(self, session_id: str, message_id: int, score: int | None,
                     comment: str | None = None,
                     expected: tuple[int | None, str] | None = None) -> bool:
        """Record (or, with ``score`` None, clear) feedback on one of the session's
        replies; ``comment`` None keeps the one stored (a thumb turned keeps what was
        written). False when the message is not a reply of this session, or, with
        ``expected``, when the stored (score, comment) is not that (another tab's)."""
        try:
            return self._set_feedback(session_id, message_id, score, comment, expected)
        except IntegrityError:  # the reply went meanwhile (its chat deleted elsewhere)
            return False

    def _set_feedback(self, session_id: str, message_id: int, score: int | None,
                      comment: str | None, expected: tuple[int | None, str] | None) -> bool:
        with self._writing() as conn:
            owned = conn.execute(select(messages.c.id).where(
                messages.c.id == message_id, messages.c.session_id == session_id,
                messages.c.role == "ai")).first()
            if owned is None:
                return False
            if expected is not None:  # locked: a change in flight elsewhere is waited for
                stored = conn.execute(select(feedback.c.score, feedback.c.comment).where(
                    feedback.c.message_id == message_id).with_for_update()).first()
                if (tuple(stored) if stored else (None, "")) != expected:
                    return False
            if score is None:
                conn.execute(delete(feedback).where(feedback.c.message_id == message_id))
                return True
            given = {"score": 1 if score else 0, "updated_at": time.time()}
            if comment is not None:
                given["comment"] = comment.strip()[:FEEDBACK_COMMENT_CHARS]
            # one statement: two replicas writing at once cannot both insert
            conn.execute(self._upsert(feedback, [feedback.c.message_id], given).values(
                {"message_id": message_id, "session_id": session_id, "comment": "", **given}))
        return True

    def feedback_by_agent(self, shared_model: str = "") -> list[dict[str, Any]]:
        """Thumbs up and down per (custom or shared, model), for the stats, those on
        answers since replaced by a regenerate included."""
        query = (select(messages.c.custom_agent, messages.c.model, feedback.c.score,
                        func.count())
                 .join(messages, messages.c.id == feedback.c.message_id)
                 .group_by(messages.c.custom_agent, messages.c.model, feedback.c.score))
        replaced = (select(replaced_feedback.c.custom_agent, replaced_feedback.c.model,
                           replaced_feedback.c.score, func.count())
                    .group_by(replaced_feedback.c.custom_agent, replaced_feedback.c.model,
                              replaced_feedback.c.score))
        totals: dict[tuple[bool, str], dict[str, Any]] = {}
        with self.engine.connect() as conn:
            for custom, model, score, count in [*conn.execute(query),
                                                *conn.execute(replaced)]:
                key = (bool(custom), model or shared_model)
                entry = totals.setdefault(key, {"agent": "custom" if custom else "shared",
                                                "model": key[1], "up": 0, "down": 0})
                entry["up" if score else "down"] += count
        return sorted(totals.values(), key=lambda e: (e["agent"], e["model"]))

    def count_messages(self, session_id: str | None = None) -> int:
        query = select(func.count()).select_from(messages)
        if session_id is not None:
            query = query.where(messages.c.session_id == session_id)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())


    # -- aggregates -----------------------------------------------------------------
    def count_chat_messages(self) -> int:
        """What users sent and the replies they got, as a person counts them: a reply's
        tool steps are part of it (a reply is a run's assistant rows, as in
        ``usage_by_agent``); a reply being written counts."""
        sent = select(func.count()).where(messages.c.role == "human").scalar_subquery()
        replies = select(func.count(func.distinct(_reply_of_row()))).where(
            messages.c.role == "ai").scalar_subquery()
        with self.engine.connect() as conn:
            return int(conn.execute(select(sent + replies)).scalar_one())

    def count_sessions(self) -> int:
        """Conversations with at least one message (an opened, empty chat is no session)."""
        query = select(func.count()).select_from(sessions).where(
            exists().where(messages.c.session_id == sessions.c.id))
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def count_custom_sessions(self) -> int:
        """Conversations on a custom agent, counted as ``count_sessions`` counts: once
        they have a message (settings chosen in an empty chat make no session yet)."""
        query = select(func.count()).select_from(sessions).where(
            sessions.c.agent_spec.is_not(None),
            exists().where(messages.c.session_id == sessions.c.id))
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def usage_by_agent(self, shared_model: str = "") -> list[dict[str, Any]]:
        """Sessions and replies per (custom or shared, model that answered).

        A session counts under each model that replied in it: a shared-pool chat answered
        before and after its member changed model counts under both, a chat with no reply
        yet under none. A reply is a run's assistant rows (a tool step and the answer
        after it are one reply); an assistant row stored without a run is one of its own,
        and one without a model counts under ``shared_model``.
        """
        query = (select(messages.c.custom_agent, messages.c.model,
                        func.count(func.distinct(messages.c.session_id)),
                        func.count(func.distinct(_reply_of_row())))
                 .where(messages.c.role == "ai")
                 .group_by(messages.c.custom_agent, messages.c.model))
        usage: dict[tuple[bool, str], dict[str, Any]] = {}
        with self.engine.connect() as conn:
            for custom, model, chats, replies in conn.execute(query):
                key = (bool(custom), model or shared_model)
                entry = usage.setdefault(key, {"agent": "custom" if custom else "shared",
                                               "model": key[1], "sessions": 0,
                                               "messages": 0})
                entry["sessions"] += chats
                entry["messages"] += replies
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


def _session_dict(row: Any) -> dict[str, Any]:
    data = dict(row._mapping)
    data["agent_spec"] = json.loads(data["agent_spec"]) if data["agent_spec"] else None
    return data


def _reply_of_row():
    """Which reply an assistant row belongs to: its run, or the row itself if it has none
    (appended without one)."""
    return func.coalesce(messages.c.run_id, literal("#") + cast(messages.c.id, String))
