"""The run engine: admit a message, store it, and generate its answer as a run.

``ChatEngine`` is given its parts: the store, the recent-history cache, the worker that
runs replies, and ``Conversations`` (the manager), which lends agents and keeps session
records. A reply's progress is durable: its row exists from the start with status
``running`` and its text is checkpointed every second, so a reload, another replica or a
restart after a crash shows what was generated. One run per conversation at a time: a
message sent while a reply is being written is refused with a notice (never two answers
to one message, and the history stays in order).
"""

from __future__ import annotations

import asyncio
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from sqlalchemy.exc import IntegrityError

from core import turns
from core.config import Price
from core.errors import ChatError, MessageRejected, describe_error
from core.group_commit import running_loop
from core.ids import new_run_id, replica_is_gone
from core.limits import HISTORY_WINDOW
from core.pool import Lease, Ticket
from core.recent import Recent, RecentHistory
from core.run_log import ChatMovedOn, NothingToAnswer, RunInProgress, TurnStart
from core.runs import CHECKPOINT_EVERY, STALE_AFTER, STOP_WAIT, Run, RunWorker
from core.schema import COMPLETE, INTERRUPTED, STOPPED
from core.store import SessionStore
from core.usage import cost_of, count_tokens, owner_key

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")  # Cc but tab and line breaks
_SURROGATE = re.compile(r"[\ud800-\udfff]")
BUSY = "A reply is still being written in this chat. Wait for it, or stop it first."
MOVED_ON = ("This chat changed in another tab or window since this page showed it; "
            "here is the latest.")
DELETED = "This chat was deleted (in another tab or window)."
SHUT_DOWN = "The server restarted while this reply was being written. Try again."
SWEEP_EVERY = 10  # checkpoints between sweeps for runs whose owner died
DELETED_KEPT = 10_000  # deleted chats remembered here, so no late message brings one back
ALLOWANCES_KEPT = 100_000  # owners' rate-limit buckets; the least recently used one goes
# first (a bucket untouched for a minute is full anyway)


@dataclass(frozen=True, slots=True)
class Answerer:
    """Who answers a try: the agent, its label (a member's name, or "custom:<model>"),
    and the model and system prompt it answers with. A chat's own agent is fixed when
    the request is made: its settings may change (or be reset) while it waits."""

    agent: Any
    label: str
    model: str
    prompt: str


# One try at answering: who answers, the pool lease (None for a chat's own agent) and a
# callback to say the member answered.
Attempt = Callable[[Answerer, Lease | None, Callable[[], None]], Awaitable[None]]


class Conversation(Protocol):
    """What the engine needs of a session record."""

    session_id: str
    owner: str | None


class Conversations(Protocol):
    """What the engine needs of whoever keeps sessions and agents (the manager)."""

    def touch(self, session: Any) -> None: ...
    def new_row(self, session: Any, title: str, again: bool = False
                ) -> dict[str, Any] | None: ...
    def mark_saved(self, session: Any) -> None: ...
    def title_for(self, text: str) -> str: ...
    def answered_by(self, session: Any) -> tuple[str, bool]: ...
    def adopt_settings(self, session: Any, stored: dict[str, Any] | None) -> None: ...
    async def serve(self, session: Any, attempt: Attempt, *, fresh: Callable[[], bool],
                    on_ticket: Callable[[Ticket | None], Any]) -> None: ...


@dataclass(eq=False)
class _Turn:
    """A turn about to start: who asks what, and what its start stores."""

    session: Conversation
    human: HumanMessage | None  # None: answer the last question again
    run_id: str = field(default_factory=new_run_id)
    new_row: dict[str, Any] | None = None  # the conversation's row, if not yet stored
    begin: dict[str, Any] = field(default_factory=dict)  # start_turn's other arguments

    @property
    def sid(self) -> str:
        return self.session.session_id


@dataclass(eq=False)
class _Progress:
    """A run's state on the worker's loop (touched by that thread only)."""

    run: Run
    reply_id: int
    task: asyncio.Task[Any] | None = None
    done: turns.TurnResult = field(default_factory=turns.TurnResult)
    saved_chunks: int = 0
    stored: int = 0  # messages of ``done`` already stored
    ids: list[int] = field(default_factory=list)  # stored message ids, in order
    writing: asyncio.Future[Any] | None = None
    history: list[BaseMessage] = field(default_factory=list)  # what the model was sent
    began: float = field(default_factory=time.monotonic)
    first_token: float | None = None  # time.monotonic() of the first event
    member: str = ""      # who answered: a pool member, or "custom"
    model: str = ""
    version: int = 0
    answering: float = 0.0  # time.monotonic() when the latest try on a member began
    last_try: float = 0.0  # seconds it took (the rest of the run was waiting)
    prompt: str = ""      # the system prompt it was told (for estimated input tokens)

    @property
    def text(self) -> str:
        return "".join(self.done.partial)


class ChatEngine:
    """Starts, runs, stops and reports runs. Thread-safe; usable from asyncio."""

    def __init__(self, store: SessionStore, conversations: Conversations,
                 recent: RecentHistory, worker: RunWorker, *, max_message_chars: int,
                 rate_per_minute: int, history_max_tokens: int, replica: str = "",
                 prices: Mapping[str, Price] | None = None,
                 clock: Any = time.monotonic) -> None:
        self.store = store
        self.conversations = conversations
        self.recent = recent
        self.worker = worker
        self.max_message_chars = max_message_chars
        self.rate_per_minute = rate_per_minute
        self.history_max_tokens = history_max_tokens
        self.replica = replica
        self.prices = dict(prices or {})
        self._clock = clock
        self._lock = threading.Lock()
        self._active: dict[str, Run] = {}
        self._launching: set[str] = set()  # conversations whose run is being started
        self._launch_left = threading.Condition(self._lock)  # one left ``_launching``
        self._deleted: OrderedDict[str, None] = OrderedDict()
        self._allowances: OrderedDict[str, tuple[float, float]] = OrderedDict()  # left, when
        self._progress: dict[str, _Progress] = {}  # worker thread only
        self._stop_before_start: set[str] = set()  # worker thread only
        self.shutting_down = False  # runs cancelled from now on end interrupted, not stopped
        self.sweep()
        self._checkpointer = worker.submit(self._checkpoints())

    # -- admission ------------------------------------------------------------------
    def check_message(self, text: object) -> str:
        """The cleaned message, or MessageRejected with a short reason."""
        if not isinstance(text, str):
            raise MessageRejected("A message must be text.")
        text = _SURROGATE.sub("\ufffd", _CONTROL.sub("", text)).strip()
        if not text:
            raise MessageRejected("The message is empty.")
        if len(text) > self.max_message_chars:
            raise MessageRejected(f"The message is too long: {len(text):,} characters; "
                                  f"the limit is {self.max_message_chars:,}.")
        return text

    def _take_allowance(self, session: Conversation) -> None:
        """A token bucket per owner (a browser; per chat without one), shared by its
        chats and tabs: RATE_LIMIT_PER_MINUTE requests to the model, refilled steadily.
        Per chat, "New chat" gave a fresh allowance."""
        rate = self.rate_per_minute
        if not rate:
            return
        now = self._clock()
        key = session.owner or session.session_id
        with self._lock:
            left, checked = self._allowances.pop(key, (rate, now))
            left = min(rate, left + (now - checked) * rate / 60)
            self._keep_allowance(key, left if left < 1 else left - 1, now)
            if left < 1:
                wait = math.ceil((1 - left) * 60 / rate)
                raise MessageRejected(f"You are sending messages too fast; wait {wait} s.")

    def _give_back_allowance(self, session: Conversation) -> None:
        key = session.owner or session.session_id
        with self._lock:
            if key in self._allowances:
                left, checked = self._allowances[key]
                self._allowances[key] = (min(self.rate_per_minute, left + 1), checked)

    def _keep_allowance(self, key: str, left: float, now: float) -> None:  # lock held
        self._allowances[key] = (left, now)
        while len(self._allowances) > ALLOWANCES_KEPT:
            self._allowances.popitem(last=False)

    # -- starting runs --------------------------------------------------------------
    def start(self, session: Conversation, text: object, shown_last: int | None = None
              ) -> Run:
        """Store the user's message and start answering it; returns the run at once.

        ``shown_last``: the last message the page showed (0: none). If the chat has
        moved on since (another tab sent, switched versions or answered), it is refused:
        the message would follow what its writer never saw.

        On SQLite, from any thread, the start is made on the worker's loop while the
        thread waits: its writes go with the loop's others (one transaction per pass),
        rather than a thousand threads taking turns at the database and the GIL. On a
        server database each thread writes its own transaction, concurrently.
        """
        if self.store.runs.batched and running_loop() is not self.worker.loop:
            return self.worker.submit(self._launch_carried_through(
                session, text, stop=False, shown_last=shown_last)).result()
        return self._launch(session, HumanMessage(self.check_message(text)),
                            shown_last=shown_last)

    def edit(self, session: Conversation, message_id: int, text: object) -> Run:
        """A new version of one of the conversation's user messages: the conversation
        forks there, the new branch is shown and answered; the old one stays reachable."""
        text = self.check_message(text)
        return self._launch(session, HumanMessage(text), edit_of=message_id)

    def regenerate(self, session: Conversation, shown_last: int | None = None) -> Run:
        """Answer the last user message again, replacing whatever followed it.

        ``shown_last``: the last message the page showed. If the chat has moved on since
        (another tab sent or answered), it is refused: a page must not redo an answer
        its user never saw.
        """
        return self._launch(session, None, shown_last=shown_last)

    def _launch(self, session: Conversation, human: HumanMessage | None,
                edit_of: int | None = None, shown_last: int | None = None) -> Run:
        with self._admitted(session):  # a regenerate asks the model too, as a message
            return self._begin(session, human, edit_of, shown_last)

    async def _launch_here(self, session: Conversation, text: object,
                           shown_last: int | None = None) -> Run:
        """``start`` on the worker's loop, which it never blocks: the turn's writes go
        with the others of the loop's pass, no thread hand-off on SQLite."""
        human = HumanMessage(self.check_message(text))
        with self._admitted(session):
            turn = self._turn(session, human, None, shown_last)
            with self._start_errors(None):
                try:
                    started = await self.store.runs.astart_turn(
                        turn.sid, human, new_session=turn.new_row, **turn.begin)
                except IntegrityError:  # its row was deleted meanwhile (retention): again
                    self._refuse_if_deleted(turn.sid)
                    turn.new_row = self.conversations.new_row(session, human.text, True)
                    started = await self.store.runs.astart_turn(
                        turn.sid, human, new_session=turn.new_row, **turn.begin)
                recent = self._extended(turn.sid, human, started)
                if recent is None:
                    recent = await asyncio.get_running_loop().run_in_executor(
                        None, self._reloaded, turn.sid, started)
            return self._launched(turn, started, recent)

    async def _launch_carried_through(self, session: Conversation, text: object,
                                      stop: bool, shown_last: int | None = None) -> Run:
        """``_launch_here``, carried through if the caller gives up meanwhile (its start
        may be stored already): the run starts all the same; with ``stop``, stopped at
        once (an ``asend`` cancelled is a stop), else left going (a reader that left)."""
        launching = asyncio.ensure_future(self._launch_here(session, text, shown_last))
        try:
            return await asyncio.shield(launching)
        except asyncio.CancelledError:
            launching.add_done_callback(lambda done: self._unawaited(done, stop))
            raise

    def _unawaited(self, launching: asyncio.Future[Run], stop: bool) -> None:
        if launching.cancelled() or launching.exception() is not None:
            return  # it did not start: nothing to stop (its error is nobody's now)
        if stop:
            self._cancel(launching.result().id)

    @contextmanager
    def _admitted(self, session: Conversation) -> Iterator[None]:
        """A run may start, unless one is starting or running for this conversation
        here; it costs the owner a request of its rate limit (given back if the start is
        refused: a reply being written elsewhere, the chat moved on)."""
        sid = session.session_id
        with self._lock:
            if sid in self._deleted:
                raise MessageRejected(DELETED)
            if sid in self._active or sid in self._launching:
                raise MessageRejected(BUSY)
            self._launching.add(sid)
        try:
            self._take_allowance(session)
            try:
                yield
            except MessageRejected:
                if self.rate_per_minute:
                    self._give_back_allowance(session)
                raise
        finally:
            with self._lock:
                self._launching.discard(sid)
                self._launch_left.notify_all()

    def _refuse_if_deleted(self, session_id: str) -> None:
        """A chat deleted by its user is not made again by a message stored late."""
        with self._lock:
            if session_id in self._deleted:
                raise MessageRejected(DELETED)

    def deleting(self, session_id: str) -> None:
        """The conversation is being deleted: no run starts for it here any more, and
        one being started now is waited for (its start stored; ``stop`` then stops it),
        so that none stores its message after the delete and brings the chat back."""
        with self._lock:
            self._deleted[session_id] = None
            while len(self._deleted) > DELETED_KEPT:
                self._deleted.popitem(last=False)
            self._launch_left.wait_for(lambda: session_id not in self._launching,
                                    timeout=STOP_WAIT)

    def _begin(self, session: Conversation, human: HumanMessage | None,
               edit_of: int | None, shown_last: int | None) -> Run:
        turn = self._turn(session, human, edit_of, shown_last)
        with self._start_errors(edit_of):
            try:
                started = self.store.runs.start_turn(turn.sid, human,
                                                     new_session=turn.new_row, **turn.begin)
            except IntegrityError:  # its row was deleted meanwhile (retention): again
                self._refuse_if_deleted(turn.sid)
                turn.new_row = self.conversations.new_row(session, human.text if human
                                                          else "", True)
                started = self.store.runs.start_turn(turn.sid, human,
                                                     new_session=turn.new_row, **turn.begin)
            recent = self._extended(turn.sid, human, started)
            if recent is None:
                recent = self._reloaded(turn.sid, started)
        return self._launched(turn, started, recent)

    def _turn(self, session: Conversation, human: HumanMessage | None,
              edit_of: int | None, shown_last: int | None = None) -> _Turn:
        """What storing a turn's start needs, before the store is asked."""
        self.conversations.touch(session)
        model, custom = self.conversations.answered_by(session)
        turn = _Turn(session, human)
        turn.new_row = self.conversations.new_row(session, human.text if human else "")
        turn.begin = dict(run={"id": turn.run_id, "agent": "", "replica": self.replica},
                          title=self.conversations.title_for(human.text) if human else "",
                          reply={"model": model, "custom_agent": custom},
                          stale_before=time.time() - STALE_AFTER, edit_of=edit_of,
                          shown_last=shown_last)
        return turn

    @staticmethod
    @contextmanager
    def _start_errors(edit_of: int | None) -> Iterator[None]:
        """A turn that cannot start: a short reason for the user."""
        try:
            yield
        except RunInProgress:
            raise MessageRejected(BUSY) from None
        except ChatMovedOn:
            raise MessageRejected(MOVED_ON) from None
        except NothingToAnswer:
            raise MessageRejected("There is no such message to answer." if edit_of
                                  else "There is no message to answer again.") from None
        except MessageRejected:
            raise
        except Exception as exc:
            raise describe_error(exc) from exc

    def _launched(self, turn: _Turn, started: TurnStart, recent: Recent | None) -> Run:
        """The turn's start is stored: its run goes to the worker, answered with the
        chat's settings as stored (another tab's record or another replica may have
        changed them since this record was read)."""
        sid = turn.sid
        self.conversations.adopt_settings(turn.session, started.agent_spec)
        if turn.new_row is not None:
            self.conversations.mark_saved(turn.session)
        run = Run(turn.run_id, sid, started.user_message_id,
                  regenerating=turn.human is None)
        history = turns.model_input(recent.messages, self.history_max_tokens, recent.tokens)
        with self._lock:
            self._active[sid] = run
        execute = self._execute(turn.session, run, history, started.reply_id, recent)
        if running_loop() is self.worker.loop:  # no hand-off through the loop's pipe
            run.task = self.worker.loop.create_task(execute)
        else:
            run.future = self.worker.submit(execute)
        return run

    def _extended(self, sid: str, human: HumanMessage | None, started: TurnStart
                  ) -> Recent | None:
        """The conversation's cached history with the new message, if it can be trusted
        (nothing else was written since); None: it must be read again. The entry is
        taken out of the cache until the turn ends."""
        recent, new_id = self.recent.take(sid), started.user_message_id
        if human is None:  # a regenerate: the reply below was removed
            return None
        if recent is not None and recent.last_id == started.previous_id:
            recent.extend([human], new_id, HISTORY_WINDOW)
        elif started.previous_id is None:  # the first message
            recent = Recent(None)
            recent.extend([human], new_id, HISTORY_WINDOW)
        else:  # first turn here, or another writer came in between
            return None
        return recent

    def _reloaded(self, sid: str, started: TurnStart) -> Recent:
        rows = self.store.load_rows(sid, last=HISTORY_WINDOW + 1)
        recent = Recent(None)
        recent.extend([m for i, m, _ in rows if i <= started.user_message_id],
                      started.user_message_id, HISTORY_WINDOW)
        return recent

    # -- following and stopping -------------------------------------------------------
    def active_run(self, session_id: str) -> Run | None:
        """The run answering in this conversation in this process, if any."""
        with self._lock:
            return self._active.get(session_id)

    def stop(self, session_id: str, wait: float = STOP_WAIT, run_id: str | None = None
             ) -> bool:
        """Stop the conversation's run: cancel it here, or ask the replica running it;
        with ``run_id``, only that run (a Stop drawn under a reply that has ended since
        must not stop the next one, started meanwhile in another tab).

        Returns once the partial reply is stored (at most ``wait`` seconds).
        """
        run = self.active_run(session_id)
        if run is not None:
            if run_id is not None and run.id != run_id:
                return False
            self.worker.loop.call_soon_threadsafe(self._cancel, run.id)
            run.wait(wait)
            return True
        row = self.store.runs.running_run(session_id)
        return (row is not None and run_id in (None, row["id"])
                and self.store.runs.request_stop(row["id"]))

    def _cancel(self, run_id: str) -> None:
        """On the worker's loop: cancel the run's task, or stop it before it starts."""
        progress = self._progress.get(run_id)
        if progress is not None:
            if progress.task is not None:
                progress.task.cancel()
            return
        with self._lock:
            starting = any(r.id == run_id for r in self._active.values())
        if starting:  # not one that has ended already: its id would be kept for ever
            self._stop_before_start.add(run_id)

    # -- sync and async conveniences ------------------------------------------------
    def send(self, session: Conversation, text: object) -> str:
        """The reply, or ChatError. On SQLite the whole turn runs on the worker's loop
        while this thread waits (one hand-off there and one back)."""
        if self.store.runs.batched:
            return self.worker.submit(self._answer(session, text)).result()
        run = self.start(session, text)
        run.wait()
        return outcome(run)

    async def asend(self, session: Conversation, text: object) -> str:
        """``send`` for event loops: the whole turn on the worker's loop, one hand-off
        there and one back."""
        return await asyncio.wrap_future(self.worker.submit(self._answer(session, text)))

    async def _answer(self, session: Conversation, text: object) -> str:
        run = await self._launch_carried_through(session, text, stop=True)
        assert run.task is not None  # started here, on the worker's loop
        await run.task  # cancelled (the caller gave up): the run is stopped
        return outcome(run)

    def stream(self, session: Conversation, text: object) -> Iterator[turns.Event]:
        """Start a run and follow it; leaving early leaves the run going."""
        return _follow(self.start(session, text))

    def stream_regenerate(self, session: Conversation) -> Iterator[turns.Event]:
        return _follow(self.regenerate(session))

    async def astream(self, session: Conversation, text: object
                      ) -> AsyncIterator[turns.Event]:
        run = await asyncio.wrap_future(self.worker.submit(
            self._launch_carried_through(session, text, stop=False)))
        seen = 0
        while True:
            events, done = await asyncio.to_thread(run.read, seen, 0.5)
            seen += len(events)
            for event in events:
                yield event
            if done and not events:
                break
        if run.status == INTERRUPTED:
            raise ChatError(run.error or "The reply was interrupted.", run.retryable)

    # -- execution, on the worker's loop ----------------------------------------------
    async def _execute(self, session: Conversation, run: Run, history: list[BaseMessage],
                       reply_id: int, recent: Recent | None) -> None:
        progress = _Progress(run, reply_id, task=asyncio.current_task(), history=history)
        self._progress[run.id] = progress
        status, error, retryable = COMPLETE, None, True
        try:
            if run.id in self._stop_before_start:
                self._stop_before_start.discard(run.id)
                raise asyncio.CancelledError

            async def attempt(answerer: Answerer, lease: Lease | None,
                              answered: Callable[[], None]) -> None:
                run.agent = progress.member = answerer.label
                progress.answering = time.monotonic()
                progress.prompt, progress.model = answerer.prompt, answerer.model
                if lease is not None:
                    progress.version = lease.version
                try:
                    async for event in turns.astream(answerer.agent, history,
                                                     progress.done):
                        if not run.answered:
                            run.answered = True
                            progress.first_token = time.monotonic()
                            answered()
                        run.add(event)
                        if isinstance(event, turns.ToolResult):  # a step ends on a result
                            await self._store_finished_steps(progress)
                except turns.ReplyCutOff:
                    if lease is not None:
                        lease.outcome = "interrupted"
                    raise
                finally:
                    progress.last_try = time.monotonic() - progress.answering

            await self.conversations.serve(
                session, attempt, fresh=lambda: not (progress.done.messages
                                                     or progress.done.partial),
                on_ticket=run.wait_in)
        except asyncio.CancelledError:
            status = STOPPED
            if self.shutting_down:  # no user stopped it: it can be asked for again
                status, error, retryable = INTERRUPTED, SHUT_DOWN, True
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                task.uncancel()
        except Exception as exc:  # noqa: BLE001 - every failure is stored and reported
            failure = describe_error(exc)
            status, error, retryable = INTERRUPTED, str(failure), failure.retryable
        finally:
            await self._finish(session, progress, status, error, retryable, recent)

    async def _store_finished_steps(self, progress: _Progress) -> None:
        """A tool step whose results are all in is stored, and a new reply row opened."""
        step = _finished_step(progress.done.messages, progress.stored)
        if step is None:
            return
        call, results = step
        # who answers (set as its try began), not the start's guess nor settings since
        model, custom = progress.model, progress.member.startswith("custom:")
        progress.writing = asyncio.ensure_future(asyncio.to_thread(
            self.store.runs.advance_reply, progress.run.session_id, progress.run.id,
            progress.reply_id, call, results, {"model": model, "custom_agent": custom}))
        ids, next_id = await asyncio.shield(progress.writing)
        self._advanced(progress, call, results, ids, next_id)

    @staticmethod
    def _advanced(progress: _Progress, call: AIMessage, results: list[ToolMessage],
                  ids: list[int], next_id: int) -> None:
        progress.ids += [progress.reply_id, *ids]
        progress.stored += 1 + len(results)
        progress.reply_id, progress.saved_chunks, progress.writing = next_id, 0, None

    async def _finish(self, session: Conversation, progress: _Progress, status: str,
                      error: str | None, retryable: bool, recent: Recent | None) -> None:
        """Store the outcome (shielded: a second cancel cannot lose it), then tell readers."""
        run, done = progress.run, progress.done
        if progress.writing is not None:  # a stop arrived while a tool step was stored
            try:
                ids, next_id = await _through_stops(progress.writing)
                step = _finished_step(done.messages, progress.stored)
                if step is not None:
                    self._advanced(progress, step[0], step[1], ids, next_id)
            except Exception:  # noqa: BLE001 - the step's write failed; end the run anyway
                pass
        final = _final_reply(done, progress.stored)
        if status == COMPLETE and final is None:
            status, error = INTERRUPTED, "The model returned no reply. Try again."
        message: BaseMessage | None = final if status == COMPLETE else (
            AIMessage(progress.text) if progress.text else final)
        usage = self._usage(session, progress, status, final)
        produced = done.messages[:progress.stored]

        loop = asyncio.get_running_loop()
        told = loop.create_future()

        def stored(ended: bool | None, failure: BaseException | None) -> None:
            """Once the end is stored (or failed), on whichever thread stored it: tell
            readers. Runs even if this task is cancelled again meanwhile."""
            nonlocal status, error
            if failure is not None:  # reported; the sweep ends the run later
                status, error = INTERRUPTED, str(describe_error(failure))
            elif not ended:  # ended elsewhere as stale meanwhile: as it was stored
                status, error = INTERRUPTED, "The reply was interrupted. Try again."
            if status == COMPLETE and recent is not None and message is not None:
                recent.extend([*produced, message], progress.reply_id, HISTORY_WINDOW)
                self.recent.put(run.session_id, recent)
            with self._lock:
                if self._active.get(run.session_id) is run:
                    del self._active[run.session_id]
            run.reply = message.text if (status == COMPLETE and message is not None) else ""
            run.end(status, error, retryable)
            if running_loop() is loop:
                told.set_result(None)
            else:
                loop.call_soon_threadsafe(told.set_result, None)

        self.store.runs.finish_turn_later(stored, run.session_id, run.id, progress.reply_id,
                                          message, status, error, run.agent or None, usage,
                                          steps=bool(produced), replaces=(
                                              run.user_message_id if run.regenerating
                                              else None))
        await _through_stops(told)  # the task ends after the run, never before
        self._progress.pop(run.id, None)

    def _usage(self, session: Conversation, progress: _Progress, status: str,
               final: BaseMessage | None) -> dict[str, Any] | None:
        """The reply's usage row: tokens, cost, latencies, who answered (None: no model
        was reached)."""
        if not progress.member:
            return None
        partial = "" if status == COMPLETE else progress.text
        # every model call that answered counts, stored or not (a stop during a tool
        # step still paid for the call that asked for the tool)
        sent = ([SystemMessage(progress.prompt), *progress.history] if progress.prompt
                else progress.history)
        tokens = count_tokens(sent, progress.done.messages, partial)
        now = time.monotonic()
        return {"run_id": progress.run.id, "owner": owner_key(session.owner),
                "model": progress.model, "member": progress.member,
                "agent_version": progress.version,
                "custom": progress.member.startswith("custom:"), "status": status,
                "input_tokens": tokens.input, "output_tokens": tokens.output,
                "estimated": tokens.estimated,
                "cost": cost_of(self.prices, progress.model, tokens),
                # the member's: its last try's, the one that answered or was cut short;
                # the rest is what the user waited on top (for a slot, out a provider's
                # cooldown, on a try that failed over): the queue's
                "ttft": None if progress.first_token is None
                else progress.first_token - progress.answering,
                "total_seconds": progress.last_try,
                "queue_seconds": max(0.0, now - progress.began - progress.last_try),
                "finished_at": time.time()}

    async def _checkpoints(self) -> None:
        """Every second: save running replies' new text, mark runs alive, and honour
        stops asked for from other replicas; now and then end runs whose owner died."""
        beats = 0
        while True:
            await asyncio.sleep(CHECKPOINT_EVERY)
            beats += 1
            await self._checkpoint(sweep=beats % SWEEP_EVERY == 0)

    async def _checkpoint(self, sweep: bool) -> None:
        """One checkpoint. A call of its own: what it saw of the runs (their histories
        among it) is let go when it returns, not held through the next second's sleep."""
        progress = list(self._progress.values())
        changed = [p for p in progress if len(p.done.partial) != p.saved_chunks]
        replies = [(p.reply_id, p.run.id, AIMessage(p.text), p.model) for p in changed]
        saved = [(p, p.reply_id, len(p.done.partial)) for p in changed]
        try:
            stops = await asyncio.to_thread(self.store.runs.checkpoint, replies,
                                            [p.run.id for p in progress])
            if sweep:
                await asyncio.to_thread(self.sweep)
        except Exception:  # noqa: BLE001 - a database outage must not end checkpoints
            return
        for p, reply_id, size in saved:
            if p.reply_id == reply_id:  # else a tool step opened a new reply row meanwhile
                p.saved_chunks = size
        for run_id in stops:
            self._cancel(run_id)

    def sweep(self) -> int:
        """End runs left running by a dead process: one of this host that is gone, or
        any that stopped checkpointing (``STALE_AFTER``). Nothing stays running forever."""
        return self.store.runs.interrupt_stale_runs(time.time() - STALE_AFTER, gone=self._orphan)

    def _orphan(self, run_id: str, replica: str) -> bool:
        """A run nobody executes: ours but not running here (its end failed to be
        stored), or a dead process's on this host."""
        if replica == self.replica:
            with self._lock:
                return run_id not in {r.id for r in self._active.values()} and not (
                    self._launching)
        return replica_is_gone(replica, self.replica)

    def in_flight(self) -> int:
        with self._lock:
            return len(self._active)


async def _through_stops(future: asyncio.Future[Any]) -> Any:
    """``future``'s result, waited for through any further cancel of this task (a second
    Stop, another tab's, a replica's asked again at each checkpoint): a run's end must
    be stored, and its readers told, before its task ends."""
    while True:
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            if future.cancelled():
                raise
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                task.uncancel()


def outcome(run: Run) -> str:
    """The reply of a finished run, or its failure as a ChatError."""
    if run.status == COMPLETE:
        return run.reply
    if run.status == STOPPED:
        raise ChatError("The reply was stopped.")
    raise ChatError(run.error or "The reply was interrupted. Try again.", run.retryable)


def _follow(run: Run) -> Iterator[turns.Event]:
    yield from run.follow()
    if run.status == INTERRUPTED:
        raise ChatError(run.error or "The reply was interrupted. Try again.", run.retryable)


def _finished_step(produced: list[BaseMessage], start: int
                   ) -> tuple[AIMessage, list[ToolMessage]] | None:
    """A tool-calling message at ``start`` with every result after it, if all are in."""
    if len(produced) <= start:
        return None
    call = produced[start]
    if not isinstance(call, AIMessage) or not call.tool_calls:
        return None
    results = [m for m in produced[start + 1:] if isinstance(m, ToolMessage)]
    wanted = {c["id"] for c in call.tool_calls}
    if not wanted <= {r.tool_call_id for r in results}:
        return None
    return call, results


def _final_reply(done: turns.TurnResult, start: int) -> AIMessage | None:
    """The answer after the stored steps: the last AI message without tool calls."""
    for message in reversed(done.messages[start:]):
        if isinstance(message, AIMessage) and not message.tool_calls:
            return message
    return None
