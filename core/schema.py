"""The declared schema: what a fully migrated database holds (``core.migrations`` gets
an old or blank database there).

A conversation is a ``sessions`` row; its ``messages`` are append-only, ordered by id,
each naming its parent (an edit forks the conversation: ``core.branches``). A
``runs`` row is one answer being generated: it names the user message it answers, and
while it runs its reply rows carry status ``running`` and are checkpointed. At most one
run per conversation is running (a partial unique index says so to every replica).
"""

from __future__ import annotations

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
    text,
)

from core.limits import MODEL_NAME_MAX_CHARS, TITLE_MAX_CHARS

# Status of a run and of the reply rows it wrote: running, then why it ended.
RUNNING, COMPLETE, STOPPED, INTERRUPTED = "running", "complete", "stopped", "interrupted"

metadata = MetaData()
ID = BigInteger().with_variant(Integer, "sqlite")

sessions = Table(
    "sessions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("owner", String(64), nullable=True),
    Column("title", String(TITLE_MAX_CHARS), nullable=False, default=""),
    Column("agent_spec", Text, nullable=True),  # JSON of AgentSpec when custom
    # no longer written nor read (the stats count models from the replies); dropped by a
    # later release, once no replica of this one's predecessor writes it
    Column("agent_model", String(MODEL_NAME_MAX_CHARS), nullable=True),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("branch_id", ID, nullable=True),  # the message last chosen, once edited
    Index("ix_sessions_owner_updated", "owner", "updated_at"),
)

messages = Table(
    "messages",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("session_id", String(64), ForeignKey("sessions.id", ondelete="CASCADE"),
           nullable=False),
    Column("role", String(16), nullable=False),
    Column("content", Text, nullable=False),
    Column("payload", Text, nullable=False),  # message_to_dict JSON
    Column("status", String(16), nullable=False, default=COMPLETE),
    Column("model", String(MODEL_NAME_MAX_CHARS), nullable=True),  # who answered (AI)
    Column("custom_agent", Boolean, nullable=False, default=False),
    Column("created_at", Float, nullable=False),
    Column("run_id", String(64), nullable=True),  # the run that wrote a reply row
    Column("parent_id", ID, nullable=True),  # the message this one follows (branches)
    Index("ix_messages_session_id", "session_id", "id"),
)

runs = Table(
    "runs",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("session_id", String(64), ForeignKey("sessions.id", ondelete="CASCADE"),
           nullable=False),
    Column("user_message_id", ID, nullable=False),
    Column("status", String(16), nullable=False),
    Column("agent", String(MODEL_NAME_MAX_CHARS + 10), nullable=False, default=""),
    Column("replica", String(100), nullable=False, default=""),
    Column("error", Text, nullable=True),  # a safe, short message when it failed
    Column("stop_requested", Boolean, nullable=False, default=False),
    Column("started_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),  # the owner's checkpoint: its heartbeat
    Column("finished_at", Float, nullable=True),
    Index("ix_runs_session_started", "session_id", "started_at"),
    Index("ix_runs_status", "status"),
    Index("ux_runs_one_running", "session_id", unique=True,
          sqlite_where=text("status = 'running'"),
          postgresql_where=text("status = 'running'")),
)

usage = Table(  # one row per finished reply; no session id nor text: kept past deletion
    "usage",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("owner", String(16), nullable=False),  # anonymised: a hash of the browser id
    Column("model", String(MODEL_NAME_MAX_CHARS), nullable=False),
    Column("member", String(MODEL_NAME_MAX_CHARS + 10), nullable=False),
    Column("agent_version", Integer, nullable=False),
    Column("custom", Boolean, nullable=False),
    Column("status", String(16), nullable=False),
    Column("input_tokens", Integer, nullable=False),
    Column("output_tokens", Integer, nullable=False),
    Column("estimated", Boolean, nullable=False),  # counted by us, not by the provider
    Column("cost", Float, nullable=True),  # dollars; None: the model has no price
    Column("ttft", Float, nullable=True),  # seconds from the message to the first token
    Column("total_seconds", Float, nullable=False),
    Column("queue_seconds", Float, nullable=False),
    Column("finished_at", Float, nullable=False),
    Index("ix_usage_finished", "finished_at"),
)

cooldowns = Table(  # a provider's 429, honoured by every replica
    "cooldowns",
    metadata,
    Column("quota", String(40), primary_key=True),
    Column("until", Float, nullable=False),
)

feedback = Table(
    "feedback",
    metadata,
    Column("message_id", ID, ForeignKey("messages.id", ondelete="CASCADE"),
           primary_key=True),
    Column("session_id", String(64), ForeignKey("sessions.id", ondelete="CASCADE"),
           nullable=False),
    Column("score", Integer, nullable=False),  # 1 thumbs up, 0 thumbs down
    Column("comment", Text, nullable=False, default=""),
    Column("updated_at", Float, nullable=False),
    Index("ix_feedback_session", "session_id"),
)

replaced_feedback = Table(  # feedback on an answer a regenerate replaced: still counted
    "replaced_feedback",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("session_id", String(64), ForeignKey("sessions.id", ondelete="CASCADE"),
           nullable=False),
    Column("model", String(MODEL_NAME_MAX_CHARS), nullable=True),
    Column("custom_agent", Boolean, nullable=False, default=False),
    Column("score", Integer, nullable=False),
    Column("comment", Text, nullable=False, default=""),
    Column("updated_at", Float, nullable=False),
    Index("ix_replaced_feedback_session", "session_id"),
)

replicas = Table(
    "replicas",
    metadata,
    Column("id", String(100), primary_key=True),
    Column("started_at", Float, nullable=False),
    Column("last_seen", Float, nullable=False),
    Column("report", Text, nullable=False),  # JSON: pool counters, sessions in memory
)
