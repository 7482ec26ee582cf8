"""One chat turn: admit the user's message, store it, borrow an agent, store the reply.

``ChatTurns`` is the turn half of ``ChatbotSessionManager`` (which inherits it); the
other half, in ``core.sessions``, owns sessions, agents and stats. The methods here use
the manager's ``settings``, ``store``, ``pool``, ``default_spec``, ``_lock``,
``_clock``, ``_recent``, ``_remember``, ``_row_values`` and ``_mark_saved``.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from sqlalchemy.exc import IntegrityError

from core import turns
from core.agents import Agent
from core.errors import MessageRejected, describe_error
from core.recent import Recent
from core.store import INTERRUPTED, STOPPED

if TYPE_CHECKING:
    from core.sessions import ChatbotSession

HISTORY_WINDOW = 400  # newest stored messages read per turn, before token trimming
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class Turn:
    """What one turn sends to the model, and the recent history it will extend."""

    history: list[BaseMessage]
    recent: Recent | None


class ChatTurns:
    """Sending, streaming and regenerating, for ``ChatbotSessionManager``."""

    @contextmanager
    def _borrow(self, session: ChatbotSession) -> Iterator[Agent]:
        if session.has_custom_agent:
            yield session.agent
        else:
            with self.pool.lease(prefer=session._home) as lease:
                yield lease.agent

    @asynccontextmanager
    async def _aborrow(self, session: ChatbotSession) -> AsyncIterator[Agent]:
        if session.has_custom_agent:
            yield session.agent
        else:
            async with self.pool.alease(prefer=session._home) as lease:
                yield lease.agent

    # -- turns ----------------------------------------------------------------------
    def check_message(self, text: object) -> str:
        """The cleaned message, or MessageRejected with a short reason."""
        if not isinstance(text, str):
            raise MessageRejected("A message must be text.")
        text = _CONTROL.sub("", text).strip()
        if not text:
            raise MessageRejected("The message is empty.")
        limit = self.settings.MAX_MESSAGE_CHARS
        if len(text) > limit:
            raise MessageRejected(f"The message is too long: {len(text):,} characters; "
                                  f"the limit is {limit:,}.")
        return text

    def _take_allowance(self, session: ChatbotSession) -> None:
        """Per-session token bucket: RATE_LIMIT_PER_MINUTE messages, refilled steadily."""
        rate = self.settings.RATE_LIMIT_PER_MINUTE
        if not rate:
            return
        now = self._clock()
        with self._lock:
            allowance = rate if session._allowance is None else session._allowance
            allowance = min(rate, allowance + (now - session._checked) * rate / 60)
            session._checked = now
            if allowance < 1:
                session._allowance = allowance
                wait = math.ceil((1 - allowance) * 60 / rate)
                raise MessageRejected(f"You are sending messages too fast; wait {wait} s.")
            session._allowance = allowance - 1

    def _accept(self, session: ChatbotSession, text: object) -> Turn:
        """Validate and store the user's message, then gather the model's input."""
        text = self.check_message(text)
        self._take_allowance(session)
        with self._lock:
            self._remember(session)
        sid = session.session_id
        human = HumanMessage(text)
        try:
            new_row = None if session._saved else self._row_values(session, text)
            recent = self._recent.take(sid)
            try:
                new_id, previous = self.store.append_after(sid, human, new_session=new_row)
            except IntegrityError:  # its row was deleted meanwhile (retention): start again
                new_row = self._row_values(session, text)
                new_id, previous = self.store.append_after(sid, human, new_session=new_row)
            if new_row is not None:
                self._mark_saved(session)
            if recent is not None and recent.last_id == previous:
                recent.extend([human], new_id, HISTORY_WINDOW)
            elif previous is None:  # the session's first message: nothing to read back
                recent = Recent(None)
                recent.extend([human], new_id, HISTORY_WINDOW)
            else:  # first turn in this process, or another writer came in between: reload
                rows = self.store.load_rows(sid, last=HISTORY_WINDOW)
                recent = Recent(None)
                recent.extend([m for i, m, _ in rows if i <= new_id], new_id, HISTORY_WINDOW)
        except Exception as exc:
            raise describe_error(exc) from exc
        return Turn(turns.model_input(recent.messages, self.settings.HISTORY_MAX_TOKENS,
                                      recent.tokens), recent)

    def _rewind(self, session: ChatbotSession) -> Turn:
        """Drop everything after the last user message; return the model's input again."""
        with self._lock:
            self._remember(session)
        self._recent.drop(session.session_id)
        try:
            rows = self.store.load_rows(session.session_id, last=HISTORY_WINDOW)
            last_human = max((i for i, (_, m, _) in enumerate(rows)
                              if isinstance(m, HumanMessage)), default=None)
            if last_human is None:
                raise MessageRejected("There is no message to answer again.")
            self.store.delete_messages_after(session.session_id, rows[last_human][0])
        except MessageRejected:
            raise
        except Exception as exc:
            raise describe_error(exc) from exc
        history = [m for _, m, _ in rows[:last_human + 1]]
        return Turn(turns.model_input(history, self.settings.HISTORY_MAX_TOKENS), None)

    def _finish(self, session: ChatbotSession, turn: Turn, done: turns.TurnResult,
                status: str | None) -> None:
        """Store what the turn produced; a partial reply is stored with its status."""
        if session._spec is not None:
            model = session._spec.model
        else:
            model = "custom" if session._custom is not None else self.default_spec.model
        mark = {"model": model, "custom_agent": session.has_custom_agent, "touch": False}
        produced = list(done.messages)
        try:
            ids = self.store.append_messages(session.session_id, produced, **mark)
            if status and done.partial:
                partial = AIMessage("".join(done.partial))
                ids += self.store.append_messages(session.session_id, [partial],
                                                  status=status, **mark)
                produced.append(partial)
        except Exception as exc:
            raise describe_error(exc) from exc
        if turn.recent is not None and status is None:
            if ids:
                turn.recent.extend(produced, ids[-1], HISTORY_WINDOW)
            self._recent.put(session.session_id, turn.recent)

    def send(self, session: ChatbotSession, text: str) -> str:
        return self._answer(session, self._accept(session, text))

    def stream(self, session: ChatbotSession, text: str) -> Iterator[turns.Event]:
        """Yield tokens and tool steps; if the consumer stops early the partial is kept."""
        return self._stream_answer(session, self._accept(session, text))

    def regenerate(self, session: ChatbotSession) -> Iterator[turns.Event]:
        """Answer the last user message again, replacing the reply that followed it."""
        return self._stream_answer(session, self._rewind(session))

    def _answer(self, session: ChatbotSession, turn: Turn) -> str:
        done = turns.TurnResult()
        try:
            with self._borrow(session) as agent:
                turns.invoke(agent, turn.history, done)
        except Exception as exc:
            self._finish(session, turn, done, INTERRUPTED)
            raise describe_error(exc) from exc
        self._finish(session, turn, done, None)
        return done.reply

    def _stream_answer(self, session: ChatbotSession, turn: Turn) -> Iterator[turns.Event]:
        done, status = turns.TurnResult(), STOPPED
        try:
            with self._borrow(session) as agent:
                yield from turns.stream(agent, turn.history, done)
            status = None
        except GeneratorExit:
            raise
        except Exception as exc:
            status = INTERRUPTED
            raise describe_error(exc) from exc
        finally:
            self._finish(session, turn, done, status)

    async def asend(self, session: ChatbotSession, text: str) -> str:
        turn = await asyncio.to_thread(self._accept, session, text)
        done = turns.TurnResult()
        try:
            async with self._aborrow(session) as agent:
                await turns.ainvoke(agent, turn.history, done)
        except Exception as exc:
            await asyncio.to_thread(self._finish, session, turn, done, INTERRUPTED)
            raise describe_error(exc) from exc
        await asyncio.to_thread(self._finish, session, turn, done, None)
        return done.reply

    async def astream(self, session: ChatbotSession, text: str) -> AsyncIterator[turns.Event]:
        turn = await asyncio.to_thread(self._accept, session, text)
        done, status = turns.TurnResult(), STOPPED
        try:
            async with self._aborrow(session) as agent:
                async for event in turns.astream(agent, turn.history, done):
                    yield event
            status = None
        except (GeneratorExit, asyncio.CancelledError):
            raise
        except Exception as exc:
            status = INTERRUPTED
            raise describe_error(exc) from exc
        finally:
            self._finish(session, turn, done, status)
