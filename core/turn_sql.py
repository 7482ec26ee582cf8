"""The statements and rows every turn writes: SQLAlchemy statements compiled once per
store, run on the driver's cursor (``core.direct_writes``), and the row builders."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import BaseMessage, message_to_dict
from sqlalchemy import bindparam, delete, func, insert, select, text, update

from core.direct_writes import Compiled, DirectWriter, Execute, every_column
from core.limits import TITLE_MAX_CHARS
from core.schema import (COMPLETE, RUNNING, feedback, messages, replaced_feedback, runs,
                         sessions, usage)


# Written out, not bound: a query that says it in these words is answered from the
# partial index of running runs (a bound status is looked up in the index of all runs).
RUNS_RUNNING = text(f"runs.status = '{RUNNING}'")


class TurnStatements:
    """The statements every turn runs, compiled once per store."""

    def __init__(self, writer: DirectWriter, insert_session: Any) -> None:
        c = writer.compile
        sid = bindparam("sid")
        self.insert = c(insert(messages).values(every_column(messages, but=messages.c.id))
                        .returning(messages.c.id))
        self.touch = c(update(sessions).where(sessions.c.id == sid)
                       .values(updated_at=bindparam("now")))
        self.last_id = c(select(func.max(messages.c.id)).where(messages.c.session_id == sid))
        self.last_human = c(select(func.max(messages.c.id)).where(
            messages.c.session_id == sid, messages.c.role == "human"))
        self.new_session = c(insert_session.values(
            every_column(sessions, but=sessions.c.agent_model)))
        self.insert_run = c(insert(runs).values(every_column(runs)))
        self.running_runs = c(select(runs.c.id, runs.c.updated_at, runs.c.replica,
                                     runs.c.user_message_id).where(
            runs.c.session_id == sid, RUNS_RUNNING))
        self.run_state = c(select(runs.c.status, runs.c.updated_at)
                           .where(runs.c.id == bindparam("rid")))
        self.end_run = c(update(runs).where(runs.c.id == bindparam("rid"), RUNS_RUNNING)
                         .values(status=bindparam("status"), error=bindparam("error"),
                                 agent=func.coalesce(bindparam("agent"), runs.c.agent),
                                 finished_at=bindparam("now"), updated_at=bindparam("now")))
        # an empty reply row goes, unless the run stored steps before it: then it stays,
        # ended, to say the reply after them was cut off (else the steps look complete)
        stored_step = messages.alias("stored_step")
        self.drop_empty_replies = c(delete(messages).where(
            messages.c.session_id == sid, messages.c.run_id == bindparam("rid"),
            messages.c.status == RUNNING,
            messages.c.content == "",
            ~select(stored_step.c.id).where(
                stored_step.c.session_id == sid,
                stored_step.c.run_id == bindparam("rid"),
                stored_step.c.status == COMPLETE).exists()))
        self.end_replies = c(update(messages).where(
            messages.c.session_id == sid, messages.c.run_id == bindparam("rid"),
            messages.c.status == RUNNING)
            .values(status=bindparam("status")))
        self.run_model = c(update(messages).where(messages.c.session_id == sid,
                                                  messages.c.run_id == bindparam("rid"),
                                                  messages.c.role != "human")
                           .values(model=bindparam("model"),
                                   custom_agent=bindparam("custom")))
        self.insert_usage = c(insert(usage).values(every_column(usage)))
        # the version shown (None: never edited), the last message and the chat's
        # settings as stored (another record or replica may have changed them), in one
        self.branch_and_last = c(select(
            sessions.c.branch_id, sessions.c.agent_spec,
            select(func.max(messages.c.id)).where(messages.c.session_id == sid)
            .scalar_subquery()).where(sessions.c.id == sid))
        self.links = c(select(messages.c.id, messages.c.parent_id, messages.c.role)
                       .where(messages.c.session_id == sid))
        self.set_branch = c(update(sessions).where(sessions.c.id == sid)
                            .values(branch_id=bindparam("bid")))
        self.delete_one = c(delete(messages).where(messages.c.id == bindparam("mid")))
        kept = ("session_id", "model", "custom_agent", "score", "comment", "updated_at")
        self.keep_feedback = c(insert(replaced_feedback).from_select(kept, select(
            feedback.c.session_id, messages.c.model, messages.c.custom_agent,
            feedback.c.score, feedback.c.comment, feedback.c.updated_at)
            .join(messages, messages.c.id == feedback.c.message_id)
            .where(feedback.c.message_id == bindparam("mid"))))
        self.run_rows_text = c(select(messages.c.id, messages.c.role, messages.c.content)
                               .where(messages.c.session_id == sid,
                                      messages.c.run_id == bindparam("rid")))
        self.title_if_empty = c(update(sessions).where(sessions.c.id == sid,
                                                       sessions.c.title == "")
                                .values(title=bindparam("title")))
        # a reply row is written by its run while running: one ended elsewhere (as
        # stale) is left as it was (rowcount 0); messages before runs, as every writer
        # (with the model answering now: a member may have changed since the row opened)
        self.set_reply = c(update(messages).where(messages.c.id == bindparam("mid"),
                                                  messages.c.status == RUNNING)
                           .values(content=bindparam("content"), payload=bindparam("payload"),
                                   status=bindparam("status"),
                                   model=func.coalesce(bindparam("model"), messages.c.model),
                                   custom_agent=func.coalesce(bindparam("custom"),
                                                              messages.c.custom_agent)))
        run_reply = (messages.c.id == bindparam("mid"), messages.c.session_id == sid,
                     messages.c.run_id == bindparam("rid"),  # never another chat's row
                     messages.c.status == RUNNING)
        self.finish_reply = c(update(messages).where(*run_reply)
                              .values(content=bindparam("content"),
                                      payload=bindparam("payload"), status=bindparam("status"),
                                      model=func.coalesce(bindparam("model"),
                                                          messages.c.model),
                                      custom_agent=func.coalesce(bindparam("custom"),
                                                                 messages.c.custom_agent)))
        self.drop_reply = c(delete(messages).where(*run_reply))


def session_row(session_id: str, now: float, owner: str | None = None, title: str = "",
                 agent_spec: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"id": session_id, "owner": owner, "title": title[:TITLE_MAX_CHARS],
            **spec_columns(agent_spec), "created_at": now, "updated_at": now,
            "branch_id": None}


def message_rows(session_id: str, batch: Sequence[BaseMessage], status: str, model: str | None,
          custom_agent: bool, now: float, run_id: str | None = None) -> list[dict[str, Any]]:
    return [{
        "session_id": session_id, "role": m.type, "content": m.text,
        "payload": payload(m), "status": status,
        "model": model if m.type == "ai" else None,
        "custom_agent": custom_agent and m.type == "ai", "created_at": now,
        "run_id": run_id if m.type != "human" else None, "parent_id": None,
    } for m in batch]


def insert_chain(execute: Execute, insert_row: Compiled, rows: list[dict[str, Any]],
                  parent: int | None) -> list[int]:
    """Insert rows each following the one before (the first follows ``parent``)."""
    ids = []
    for row in rows:
        row["parent_id"] = parent
        parent = execute(insert_row, row).fetchone()[0]
        ids.append(parent)
    return ids


def payload(message: BaseMessage) -> str:
    return json.dumps(message_to_dict(message), default=str)


def spec_columns(spec: dict[str, Any] | None) -> dict[str, Any]:
    return {"agent_spec": json.dumps(spec) if spec else None}


def _session_dict(row: Any) -> dict[str, Any]:
    data = dict(row._mapping)
    data["agent_spec"] = json.loads(data["agent_spec"]) if data["agent_spec"] else None
    return data

