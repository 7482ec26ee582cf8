"""Schema history: small functions applied in order, each recorded once.

A blank database and an old one are handled alike: ``migrate`` runs whatever has not been
applied yet, inside one transaction per step.
"""

from __future__ import annotations

import fcntl
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import Connection, Engine

Migration = Callable[[Connection, MetaData], None]

_tracking = MetaData()
schema_migrations = Table(
    "schema_migrations",
    _tracking,
    Column("name", String(100), primary_key=True),
    Column("applied_at", Float, nullable=False),
)


def m001_initial(conn: Connection, metadata: MetaData) -> None:
    """Sessions and messages, as first released (frozen here: history does not change)."""
    v1 = MetaData()
    Table("sessions", v1,
          Column("id", String(64), primary_key=True),
          Column("owner", String(64), nullable=True),
          Column("title", String(200), nullable=False),
          Column("agent_spec", Text, nullable=True),
          Column("created_at", Float, nullable=False),
          Column("updated_at", Float, nullable=False),
          Index("ix_sessions_owner_updated", "owner", "updated_at"))
    Table("messages", v1,
          Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                 autoincrement=True),
          Column("session_id", String(64), ForeignKey("sessions.id", ondelete="CASCADE"),
                 nullable=False),
          Column("role", String(16), nullable=False),
          Column("content", Text, nullable=False),
          Column("payload", Text, nullable=False),
          Column("status", String(16), nullable=False),
          Column("created_at", Float, nullable=False),
          Index("ix_messages_session_id", "session_id", "id"))
    v1.create_all(conn, checkfirst=True)


def m002_agent_usage(conn: Connection, metadata: MetaData) -> None:
    """Which model answered each message, and each session's custom model (usage stats)."""
    columns = {
        "sessions": ["agent_model"],
        "messages": ["model", "custom_agent"],
    }
    inspector = inspect(conn)
    for table, names in columns.items():
        present = {c["name"] for c in inspector.get_columns(table)}
        for name in names:
            if name not in present:
                column = metadata.tables[table].c[name]
                kind = column.type.compile(dialect=conn.dialect)
                default = " NOT NULL DEFAULT FALSE" if name == "custom_agent" else ""
                conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {name} {kind}{default}"))


def m003_replicas(conn: Connection, metadata: MetaData) -> None:
    """Heartbeats: each app replica publishes its pool utilisation here."""
    metadata.tables["replicas"].create(conn, checkfirst=True)


def m004_runs(conn: Connection, metadata: MetaData) -> None:
    """Runs (one answer being generated, checkpointed while it runs) and each reply
    row's run."""
    present = {c["name"] for c in inspect(conn).get_columns("messages")}
    if "run_id" not in present:
        conn.execute(text("ALTER TABLE messages ADD COLUMN run_id VARCHAR(64)"))
    metadata.tables["runs"].create(conn, checkfirst=True)


def m005_feedback(conn: Connection, metadata: MetaData) -> None:
    """Thumbs up or down on a reply, with an optional comment."""
    metadata.tables["feedback"].create(conn, checkfirst=True)


def m006_branches(conn: Connection, metadata: MetaData) -> None:
    """Each message's parent (edits fork a conversation) and each session's chosen
    branch; existing conversations are single lines: each message follows the one
    before it."""
    kind = metadata.tables["messages"].c.id.type.compile(dialect=conn.dialect)
    if "parent_id" not in {c["name"] for c in inspect(conn).get_columns("messages")}:
        conn.execute(text(f"ALTER TABLE messages ADD COLUMN parent_id {kind}"))
        conn.execute(text(
            "UPDATE messages SET parent_id = (SELECT max(p.id) FROM messages p "
            "WHERE p.session_id = messages.session_id AND p.id < messages.id)"))
    if "branch_id" not in {c["name"] for c in inspect(conn).get_columns("sessions")}:
        conn.execute(text(f"ALTER TABLE sessions ADD COLUMN branch_id {kind}"))


def m007_usage_and_cooldowns(conn: Connection, metadata: MetaData) -> None:
    """Tokens, latency and cost of each reply; providers' rate-limit cooldowns."""
    metadata.tables["usage"].create(conn, checkfirst=True)
    metadata.tables["cooldowns"].create(conn, checkfirst=True)


def m008_replaced_feedback(conn: Connection, metadata: MetaData) -> None:
    """Feedback on answers a regenerate replaced, kept for the stats."""
    metadata.tables["replaced_feedback"].create(conn, checkfirst=True)


MIGRATIONS: list[Migration] = [m001_initial, m002_agent_usage, m003_replicas, m004_runs,
                               m005_feedback, m006_branches, m007_usage_and_cooldowns,
                               m008_replaced_feedback]


def applied(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return [row[0] for row in conn.execute(
            select(schema_migrations.c.name).order_by(schema_migrations.c.name))]


def migrate(engine: Engine, metadata: MetaData,
            steps: list[Migration] | None = None) -> list[str]:
    """Apply missing migrations; returns the names applied now.

    Running it twice is a no-op, and so is running it from several replicas at once:
    PostgreSQL migrates in one transaction under an advisory lock, SQLite under a lock
    file beside the database.
    """
    steps = MIGRATIONS if steps is None else steps
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
            return _apply(conn, metadata, steps)
    with _file_lock(engine):
        with engine.begin() as conn:
            return _apply(conn, metadata, steps)


_LOCK_KEY = 0x706F6F6C63686174  # "poolchat"


def _apply(conn: Connection, metadata: MetaData, steps: list[Migration]) -> list[str]:
    _tracking.create_all(conn, checkfirst=True)
    done = {row[0] for row in conn.execute(select(schema_migrations.c.name))}
    ran = []
    for step in steps:
        if step.__name__ in done:
            continue
        step(conn, metadata)
        conn.execute(schema_migrations.insert().values(name=step.__name__,
                                                       applied_at=time.time()))
        ran.append(step.__name__)
    return ran


@contextmanager
def _file_lock(engine: Engine) -> Iterator[None]:
    """An exclusive lock file next to an SQLite database file (none for in-memory)."""
    database = engine.url.database or ""
    if database in ("", ":memory:"):
        yield
        return
    with open(f"{database}.migrate-lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
