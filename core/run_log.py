"""Runs in the database: a turn's writes from the user's message to the reply's end.

``start_turn`` stores the user's message, the run and its reply row (status running) in
one transaction; tool steps are stored as they finish; checkpoints save a running reply's
text and mark its run alive; ``finish_turn`` stores how it ended. Runs whose owner died
are ended as interrupted by whoever notices. A turn's writes that queue up behind another
share the next transaction (``core.group_commit``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage
from sqlalchemy import bindparam, func, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from core.branches import descendants, shown_path
from core.direct_writes import DirectWriter, Execute
from core.group_commit import Done, GroupCommit
from core.schema import COMPLETE, INTERRUPTED, RUNNING, messages, runs
from core.turn_sql import TurnStatements, insert_chain, message_rows, payload, session_row


class RunInProgress(RuntimeError):
    """The conversation already has a reply being written."""


class NothingToAnswer(RuntimeError):
    """The conversation has no user message to answer."""


class ChatMovedOn(RuntimeError):
    """The conversation's last message is not the one the asker was shown."""


class RunEnded(RuntimeError):
    """The run was ended elsewhere (as stale: its owner stopped checkpointing a while)
    before this write of its own: the write is not made."""


@dataclass(frozen=True, slots=True)
class TurnStart:
    """Ids a started turn needs: the user message answered, the newest message before it
    (None when rewound), and the run's first reply row."""

    user_message_id: int
    previous_id: int | None
    reply_id: int
    agent_spec: dict[str, Any] | None = None  # the chat's settings as stored, read in it



class RunLog:
    """The runs of every conversation; thread-safe (one transaction per call)."""

    def __init__(self, engine: Engine, direct: DirectWriter, sql: TurnStatements,
                 writing: Callable[[], AbstractContextManager[Connection]]) -> None:
        self.engine, self._direct, self._sql, self._writing = engine, direct, sql, writing
        self._commits = GroupCommit(direct)

    @property
    def batched(self) -> bool:
        """Writes from an event loop share a transaction per pass (SQLite: one writer
        at a time); on a server each is its own, concurrently."""
        return self._direct.holds

    def start_turn(self, session_id: str, human: BaseMessage | None, run: dict[str, Any],
                   reply: dict[str, Any], stale_before: float,
                   new_session: dict[str, Any] | None = None, title: str = "",
                   edit_of: int | None = None, shown_last: int | None = None) -> TurnStart:
        """Store the user's message (or, with ``human`` None, rewind to the last one), the
        run that answers it and its reply row (status running), in one transaction.

        The message follows the end of the branch shown; ``edit_of`` (a user message of
        this conversation) makes it a new version of that one instead: a new branch,
        now the one shown. A rewind answers the branch's last question again. With
        ``shown_last`` (the last message the asker was shown, 0: none), either goes
        only if that is still the branch's last message (else ChatMovedOn: another tab
        or replica added to it or switched its branch since). The answer it replaces
        stays until the new one has something to show (``_drop_replaced``).

        A run of this conversation still running refuses it (RunInProgress), unless its
        owner stopped checkpointing before ``stale_before``, or it is ``run["replica"]``'s
        own (the caller runs none here): then it was interrupted.
        """
        work = self._start(session_id, human, run, reply, stale_before, new_session, title,
                           edit_of, shown_last)
        try:
            return self._commits.run(work)
        except IntegrityError:
            self._refuse_if_running(session_id)
            raise

    async def astart_turn(self, session_id: str, human: BaseMessage | None,
                          run: dict[str, Any], reply: dict[str, Any], stale_before: float,
                          new_session: dict[str, Any] | None = None, title: str = "",
                          edit_of: int | None = None, shown_last: int | None = None
                          ) -> TurnStart:
        """``start_turn`` from an event loop, which it never blocks."""
        work = self._start(session_id, human, run, reply, stale_before, new_session, title,
                           edit_of, shown_last)
        try:
            return await self._commits.write(work)
        except IntegrityError:
            self._refuse_if_running(session_id)
            raise

    def _refuse_if_running(self, session_id: str) -> None:
        """After a unique index refused a run: another replica's run was first."""
        if self.running_run(session_id) is not None:
            raise RunInProgress() from None

    def _start(self, session_id: str, human: BaseMessage | None, run: dict[str, Any],
               reply: dict[str, Any], stale_before: float,
               new_session: dict[str, Any] | None, title: str, edit_of: int | None,
               shown_last: int | None) -> Callable[[Execute], TurnStart]:
        sql = self._sql

        def start(execute: Execute) -> TurnStart:
            now = time.time()  # when written: a run's first heartbeat
            made = None  # the chat's row, if made here: no run, message or branch yet
            if new_session is not None:
                chat = session_row(session_id, now, **new_session)
                if execute(sql.new_session, chat).rowcount == 1:
                    made = chat
            if made is not None:  # its title, time and settings are the ones just stored
                branch, spec, last = None, made["agent_spec"], None
            else:
                branch, spec, last = self._chat_before_turn(
                    execute, session_id, run["replica"], stale_before, now)
            links = (None if branch is None and edit_of is None else
                     execute(sql.links, {"sid": session_id}).fetchall())
            path = (None if links is None or edit_of is not None else
                    shown_path([(i, up) for i, up, _ in links], branch))
            end = None  # the branch's last message, which a message or a rewind follows
            if edit_of is None:
                end = last if path is None else path[-1] if path else None
                if shown_last is not None and (end or 0) != shown_last:
                    raise ChatMovedOn()
            if human is not None:
                previous = end if edit_of is None else self._edited_parent(links, edit_of)
                if previous is None and title and not (made and made["title"]):
                    # a chat made by its settings first gets its title now
                    execute(sql.title_if_empty, {"sid": session_id, "title": title})
                (row,) = message_rows(session_id, [human], COMPLETE, None, False, now)
                (answered,) = insert_chain(execute, sql.insert, [row], previous)
                if edit_of is not None:
                    execute(sql.set_branch, {"sid": session_id, "bid": answered})
            else:
                answered = (execute(sql.last_human, {"sid": session_id}).fetchone()[0]
                            if path is None else self._last_question(links, path))
                if answered is None:
                    raise NothingToAnswer()
                previous = None
            execute(sql.insert_run, {
                "session_id": session_id, "user_message_id": answered, "status": RUNNING,
                "error": None, "stop_requested": False, "started_at": now,
                "updated_at": now, "finished_at": None, **run})
            reply_id = self._insert_reply(execute, session_id, run["id"], reply, now,
                                          answered)
            return TurnStart(answered, previous, reply_id,
                             json.loads(spec) if spec else None)
        return start

    def _chat_before_turn(self, execute: Execute, session_id: str, replica: str,
                          stale_before: float, now: float) -> tuple[Any, Any, Any]:
        """A stored chat's shown branch, settings and last message, once a run of it
        still running has been refused or, left by a dead owner, ended."""
        sql = self._sql
        # the chat's row first: on a server its lock orders this start with a version
        # switch (which takes it too), so neither goes on from a branch gone stale
        execute(sql.touch, {"sid": session_id, "now": now})
        for other, updated, owner, question in execute(
                sql.running_runs, {"sid": session_id}).fetchall():
            if updated >= stale_before and owner != replica:
                raise RunInProgress()
            self._end_run(execute, session_id, other, question, INTERRUPTED, None, now)
        found = execute(sql.branch_and_last, {"sid": session_id}).fetchone()
        return found if found else (None, None, None)

    def _insert_reply(self, execute: Execute, session_id: str, run_id: str,
                      reply: dict[str, Any], now: float, parent: int) -> int:
        """An empty reply row, status running, that checkpoints fill."""
        (row,) = message_rows(session_id, [AIMessage("")], RUNNING, reply.get("model"),
                       reply.get("custom_agent", False), now, run_id)
        return insert_chain(execute, self._sql.insert, [row], parent)[0]

    @staticmethod
    def _edited_parent(links: list[Any], edit_of: int) -> int | None:
        for message_id, parent, role in links:
            if message_id == edit_of and role == "human":
                return parent
        raise NothingToAnswer()

    @staticmethod
    def _last_question(links: list[Any], path: list[int]) -> int:
        roles = {i: role for i, _, role in links}
        asked = [i for i in path if roles[i] == "human"]
        if not asked:
            raise NothingToAnswer()
        return asked[-1]

    def _end_run(self, execute: Execute, session_id: str, run_id: str, question: int,
                 status: str, error: str | None, now: float, agent: str | None = None
                 ) -> None:
        """End a run (answering ``question``) and its reply rows (found through the
        session's index)."""
        execute(self._sql.drop_empty_replies, {"sid": session_id, "rid": run_id})
        self._drop_replaced(execute, session_id, run_id, question)
        execute(self._sql.end_replies, {"sid": session_id, "rid": run_id, "status": status})
        execute(self._sql.end_run, {"rid": run_id, "status": status, "error": error,
                                    "now": now, "agent": agent})

    def _drop_replaced(self, execute: Execute, session_id: str, run_id: str,
                       question: int) -> None:
        """Once a run has written some of its answer's text, the answer it replaces (a
        regenerate's: the rows below its question that are not its own) goes, the
        feedback given on it kept for the stats. A run that wrote no text (stopped in
        the queue, failed or stopped before its first word, or after a tool step only:
        a tool call is no answer) leaves the previous answer, and its own rows go."""
        mine = {i: (role, content) for i, role, content in execute(
            self._sql.run_rows_text, {"sid": session_id, "rid": run_id}).fetchall()}
        if not mine:
            return
        links = execute(self._sql.links, {"sid": session_id}).fetchall()
        replaced = descendants([(i, up) for i, up, _ in links], question) - mine.keys()
        if not replaced:  # nothing to replace (not a regenerate): its rows stay
            return
        if not any(role == "ai" and content for role, content in mine.values()):
            for own in mine:  # no answer: the one it would replace stays
                execute(self._sql.delete_one, {"mid": own})
            return
        for gone in replaced:
            execute(self._sql.keep_feedback, {"mid": gone})
            execute(self._sql.delete_one, {"mid": gone})

    def advance_reply(self, session_id: str, run_id: str, reply_id: int,
                      message: BaseMessage, results: Sequence[BaseMessage],
                      reply: dict[str, Any]) -> tuple[list[int], int]:
        """A tool-calling step finished: store it and its tool results, and open the next
        reply row. Returns the results' ids and the new reply row's id; RunEnded, writing
        nothing, if the run had already ended."""
        now = time.time()

        def advance(execute: Execute) -> tuple[list[int], int]:
            if execute(self._sql.set_reply, {"mid": reply_id, "content": message.text,
                                             "payload": payload(message), "status": COMPLETE,
                                             "model": reply.get("model"),
                                             "custom": reply.get("custom_agent")}
                       ).rowcount != 1:
                raise RunEnded()
            ids = insert_chain(execute, self._sql.insert,
                               message_rows(session_id, results, COMPLETE, None, False, now,
                                            run_id),
                               reply_id)
            next_id = self._insert_reply(execute, session_id, run_id, reply, now,
                                         ids[-1] if ids else reply_id)
            return ids, next_id
        return self._commits.run(advance)

    def finish_turn(self, session_id: str, run_id: str, reply_id: int,
                    message: BaseMessage | None, status: str, error: str | None = None,
                    agent: str | None = None, usage: dict[str, Any] | None = None,
                    steps: bool = False, replaces: int | None = None) -> bool:
        """Store the reply's last state, end the run and record its usage, in one
        transaction of three statements. Returns False, writing only the usage, when the
        run had already ended: ended elsewhere as stale (its owner stopped checkpointing
        a while, and the chat may have moved on since).

        ``message`` None removes the reply row: nothing was generated since the last tool
        step. The reply row (and with ``steps``, the run's tool-step rows) gets the model
        that answered: a member may have changed since the run began. ``replaces``: the
        question a regenerate answered again, whose previous answer goes if this run
        stored something.
        """
        return self._commits.run(self._finish(session_id, run_id, reply_id, message, status,
                                              error, agent, usage, steps, replaces))

    def finish_turn_later(self, done: Done, session_id: str, run_id: str, reply_id: int,
                          message: BaseMessage | None, status: str,
                          error: str | None = None, agent: str | None = None,
                          usage: dict[str, Any] | None = None, steps: bool = False,
                          replaces: int | None = None) -> None:
        """``finish_turn`` from an event loop, which it never blocks: ``done(ended,
        error)`` is called once it is stored (error None) or failed."""
        self._commits.submit(self._finish(session_id, run_id, reply_id, message, status,
                                          error, agent, usage, steps, replaces), done)

    def _finish(self, session_id: str, run_id: str, reply_id: int,
                message: BaseMessage | None, status: str, error: str | None,
                agent: str | None, usage: dict[str, Any] | None, steps: bool,
                replaces: int | None) -> Callable[[Execute], bool]:
        sql = self._sql
        model = usage["model"] if usage is not None else None
        custom = usage["custom"] if usage is not None else None
        row = {"mid": reply_id, "sid": session_id, "rid": run_id}
        if message is None and steps and status != COMPLETE:  # cut off after its steps:
            message = AIMessage("")  # the empty reply row stays, ended, to say so
        text = None if message is None else (message.text, payload(message))

        def finish(execute: Execute) -> bool:
            now = time.time()
            if text is not None:
                ended = execute(sql.finish_reply, {**row, "content": text[0],
                                                   "payload": text[1], "status": status,
                                                   "model": model,
                                                   "custom": custom}).rowcount == 1
            else:
                ended = execute(sql.drop_reply, row).rowcount == 1
            # not ended: ended elsewhere meanwhile, as stale; its rows are not its to
            # write any more (the chat may have gone on, below what it would replace)
            if ended:
                if replaces is not None:
                    self._drop_replaced(execute, session_id, run_id, replaces)
                execute(sql.end_run, {"rid": run_id, "status": status, "error": error,
                                      "now": now, "agent": agent})
                if usage is not None and steps:
                    execute(sql.run_model, {"sid": session_id, "rid": run_id, "model": model,
                                            "custom": custom})
            if usage is not None:  # the model was paid for all the same
                execute(sql.insert_usage, usage)
            return ended
        return finish

    def checkpoint(self, replies: Sequence[tuple[int, str, BaseMessage, str]],
                   run_ids: Sequence[str]) -> set[str]:
        """Save running replies' text so far (reply id, its run, text, the model that
        writes it: "" while not known) and mark their runs alive, in one transaction.
        The model stored when the run began is a guess (the pool's first); a reply cut
        off by a crash keeps the one that wrote it.

        Returns the runs someone asked to stop (from any replica), and those whose chat
        was deleted (by another replica: its stop went with the run). A reply that already
        ended, or a row that is not its run's (a deleted chat's id reused), is left alone.
        """
        now = time.time()
        if not run_ids:
            return set()
        with self._writing() as conn:
            if replies:
                conn.execute(update(messages).where(
                    messages.c.id == bindparam("mid"), messages.c.run_id == bindparam("rid"),
                    messages.c.status == RUNNING)
                    .values(content=bindparam("text"), payload=bindparam("data"),
                            model=func.coalesce(func.nullif(bindparam("model"), ""),
                                                messages.c.model)),
                    [{"mid": i, "rid": r, "text": m.text, "data": payload(m), "model": model}
                     for i, r, m, model in replies])
            conn.execute(update(runs).where(runs.c.id.in_(run_ids), runs.c.status == RUNNING)
                         .values(updated_at=now))
            stored = conn.execute(select(runs.c.id, runs.c.stop_requested).where(
                runs.c.id.in_(run_ids))).all()
        return {r.id for r in stored if r.stop_requested} | (
            set(run_ids) - {r.id for r in stored})

    def interrupt_stale_runs(self, cutoff: float,
                             gone: Callable[[str, str], bool] | None = None) -> int:
        """End every run whose owner stopped checkpointing before ``cutoff``, or that
        ``gone(run_id, replica)`` says has no owner any more."""
        with self.engine.connect() as conn:
            running = conn.execute(select(runs.c.id, runs.c.session_id, runs.c.replica,
                                          runs.c.updated_at, runs.c.user_message_id)
                                   .where(runs.c.status == RUNNING)).all()
        stale = []
        for r in running:
            owned = gone is None or not gone(r.id, r.replica)
            if r.updated_at < cutoff or not owned:
                stale.append((r.session_id, r.id, r.user_message_id, owned))
        if not stale:
            return 0
        now, ended = time.time(), 0
        with self._direct.transaction() as execute:
            for session_id, run_id, question, owned in stale:
                # read again under the write lock: a run that ended since (its chat may
                # have gone on: ending it again would drop the next turn as "replaced"),
                # or whose owner checkpointed since, is left as it is
                state = execute(self._sql.run_state, {"rid": run_id}).fetchone()
                if state is None or state[0] != RUNNING or (owned and state[1] >= cutoff):
                    continue
                self._end_run(execute, session_id, run_id, question, INTERRUPTED, None, now)
                ended += 1
        return ended

    def request_stop(self, run_id: str) -> bool:
        """Ask the replica running it to stop (it reads this at its next checkpoint)."""
        with self._writing() as conn:
            return conn.execute(update(runs).where(runs.c.id == run_id,
                                                   runs.c.status == RUNNING)
                                .values(stop_requested=True)).rowcount > 0

    def run(self, run_id: str) -> dict[str, Any] | None:
        return self._one_run(runs.c.id == run_id)

    def running_run(self, session_id: str) -> dict[str, Any] | None:
        return self._one_run(runs.c.session_id == session_id, runs.c.status == RUNNING)

    def latest_run(self, session_id: str) -> dict[str, Any] | None:
        """The conversation's newest run, to tell why a message has no reply."""
        return self._one_run(runs.c.session_id == session_id)

    def runs_answering(self, session_id: str, message_ids: Collection[int]
                       ) -> dict[int, dict[str, Any]]:
        """The newest run that answered each of these user messages (if any), to tell
        why one has no reply: stopped, failed, or lost."""
        if not message_ids:
            return {}
        query = (select(runs).where(runs.c.session_id == session_id,
                                    runs.c.user_message_id.in_(list(message_ids)))
                 .order_by(runs.c.started_at))
        with self.engine.connect() as conn:
            return {row.user_message_id: dict(row._mapping) for row in conn.execute(query)}

    def _one_run(self, *where: Any) -> dict[str, Any] | None:
        query = select(runs).where(*where).order_by(runs.c.started_at.desc()).limit(1)
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return dict(row._mapping) if row else None

    def run_counts(self) -> dict[str, int]:
        """Runs by status, for the stats."""
        with self.engine.connect() as conn:
            return {status: int(count) for status, count in conn.execute(
                select(runs.c.status, func.count()).group_by(runs.c.status))}

