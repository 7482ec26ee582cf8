"""Chat sessions over a shared agent pool.

A ``ChatbotSession`` is small: an id, an optional custom agent and a timestamp. Its
history lives in the store, never in an agent or in memory, so idle sessions cost a few
hundred bytes and a restarted process resumes every chat. The manager builds the pool
once, keeps recently used sessions in memory (evicting idle ones) and reloads the rest
from the store on demand. Everything here is thread-safe and usable from asyncio.
"""

from __future__ import annotations

import dataclasses
import textwrap
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from langchain_core.messages import BaseMessage

from core import turns
from core.agents import Agent, AgentFactory, AgentSpec, agent_factory_for
from core.auth import PasswordGate
from core.chat import Answerer, Attempt, ChatEngine
from core.config import Settings, load_settings
from core.ids import is_valid_session_id, new_replica_id, new_session_id
from core.limits import AUTO_TITLE_CHARS, HISTORY_WINDOW, TITLE_MAX_CHARS
from core.members import PoolMembers
from core.pool import AgentPool, Lease, Place, Ticket
from core.recent import RecentHistory
from core.router import route
from core.runs import Run, RunWorker
from core.shared_cooldowns import SharedCooldowns
from core.store import SessionStore
from core.usage import UsageLog

CUSTOM_AGENT_CACHE = 64
DISMISSED_NOTICES = 100_000
ACTIVE_WINDOW = 300.0


class ChatbotSession:
    """One conversation's record: id, owner, home pool agent, custom agent. Its history
    is in the store. The methods are shortcuts to the manager's."""

    __slots__ = ("session_id", "owner", "home", "spec", "custom", "saved", "last_used",
                 "_manager", "__weakref__")

    def __init__(self, manager: ChatbotSessionManager, session_id: str, owner: str | None,
                 home: int, saved: bool, spec: AgentSpec | None = None) -> None:
        self.session_id = session_id
        self.owner = owner
        self.home = home                 # the pool agent preferred for this chat
        self.spec = spec                 # a custom agent's spec (persisted)
        self.custom: Agent | None = None  # a custom agent object (this process only)
        self.saved = saved               # has a row in the store
        self.last_used = 0.0
        self._manager = manager

    def __repr__(self) -> str:
        return f"<ChatbotSession {self.session_id[:6]}… custom={self.has_custom_agent}>"

    @property
    def agent(self) -> Agent:
        """The agent this session talks to: its custom agent, or its pool agent."""
        return self._manager.agent_for(self)

    @agent.setter
    def agent(self, value: Agent | AgentSpec | None) -> None:
        """An AgentSpec (persisted), any agent object (this process only) or None (shared)."""
        self._manager.set_agent(self, value)

    @property
    def agent_spec(self) -> AgentSpec | None:
        return self.spec

    @property
    def has_custom_agent(self) -> bool:
        return self.custom is not None or self.spec is not None

    @property
    def messages(self) -> list[BaseMessage]:
        """The whole stored history, oldest first."""
        return self._manager.store.load_messages(self.session_id)

    def send(self, text: str) -> str:
        return self._manager.chat.send(self, text)

    def stream(self, text: str) -> Iterator[turns.Event]:
        return self._manager.chat.stream(self, text)

    async def asend(self, text: str) -> str:
        return await self._manager.chat.asend(self, text)

    def astream(self, text: str) -> AsyncIterator[turns.Event]:
        return self._manager.chat.astream(self, text)

    def start(self, text: str, shown_last: int | None = None) -> Run:
        """Start answering ``text`` and return the run at once (follow it, stop it);
        with ``shown_last``, only if the chat still ends there (``ChatEngine.start``)."""
        return self._manager.chat.start(self, text, shown_last)

    def edit(self, message_id: int, text: str) -> Run:
        """Send a new version of an earlier message: the chat forks there (a run)."""
        return self._manager.chat.edit(self, message_id, text)

    def regenerate(self) -> Iterator[turns.Event]:
        """Stream a new answer to the last user message, replacing the old one."""
        return self._manager.chat.stream_regenerate(self)

    def stop(self, run_id: str | None = None) -> bool:
        """Stop the reply being written, keeping what was generated (marked stopped);
        with ``run_id``, only if that is the reply being written."""
        return self._manager.chat.stop(self.session_id, run_id=run_id)


class ChatbotSessionManager:
    """Builds the agent pool once and serves every session from it.

    Sessions, agents and stats live here; turns are the ``chat`` engine's, which this
    manager serves as ``Conversations`` (records, agents to borrow).
    """

    def __init__(self, agent_factory: AgentFactory | None = None, *,
                 settings: Settings | None = None, store: SessionStore | None = None,
                 pool_size: int | None = None, clock: Callable[[], float] = time.monotonic,
                 **overrides: Any) -> None:
        if pool_size is not None:
            overrides["AGENT_POOL_SIZE"] = pool_size
        if settings is None:
            settings = load_settings(**overrides)
        elif overrides:  # validated like any other way in
            settings = load_settings(environ={}, secrets={},
                                     **{**_plain_values(settings), **overrides})
        self.settings = settings
        # a chat's own agent is routed (a pool slot, or beside members the own-settings
        # queue), whose router retries after a 429 shared with everybody: its client
        # must not retry on its own
        self.agent_factory = agent_factory or agent_factory_for(settings, routed=True)
        self.default_spec = AgentSpec.default(settings)
        self.stats_gate = PasswordGate(settings.STATS_PASSWORD)  # page and API share it
        self.store = store or SessionStore(settings.DATABASE_URL)
        self._usage_cache: tuple[float, dict[str, Any]] | None = None
        self.members = PoolMembers(settings, self.default_spec, agent_factory)
        self.pool = self.members.pool
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: OrderedDict[str, ChatbotSession] = OrderedDict()
        self._custom_agents: OrderedDict[AgentSpec, Agent] = OrderedDict()
        self._recent = RecentHistory(window=HISTORY_WINDOW)
        self._home_credit = [0.0] * self.pool.size
        self._unsaved = 0         # sessions in memory that have no row yet
        self._custom_objects = 0  # sessions in memory with a custom agent object (no spec)
        self.page_views = 0
        self._dismissed: OrderedDict[tuple[str, str], bool] = OrderedDict()
        self.replica_id = new_replica_id()
        self.worker = RunWorker()
        self.chat = ChatEngine(self.store, self, self._recent, self.worker,
                               max_message_chars=settings.MAX_MESSAGE_CHARS,
                               rate_per_minute=settings.RATE_LIMIT_PER_MINUTE,
                               history_max_tokens=settings.HISTORY_MAX_TOKENS,
                               replica=self.replica_id, prices=settings.PRICES,
                               clock=clock)
        self.usage = UsageLog(self.store.engine)
        self.own_endpoint = self.members.own_endpoint
        self.cooldowns = SharedCooldowns(list(self.members.queues), self.store.engine,
                                         self.worker)

    # -- sessions -------------------------------------------------------------------
    def create_session(self, owner: str | None = None) -> ChatbotSession:
        """A new session in memory; it gets a row only when it has something to keep."""
        with self._lock:
            session = ChatbotSession(self, new_session_id(), owner, self._take_home(), False)
            self._remember(session)
        return session

    def get_session(self, session_id: str, owner: str | None = None) -> ChatbotSession | None:
        """The session, from memory or the store; None if unknown, malformed or not owner's."""
        if not is_valid_session_id(session_id):
            return None
        with self._lock:
            session = self._sessions.get(session_id)
            if session is not None:
                if owner is not None and session.owner not in (None, owner):
                    return None
                self._remember(session)
                return session
        row = self.store.get_session(session_id)
        if row is None or (owner is not None and row["owner"] not in (None, owner)):
            return None
        spec = AgentSpec.from_dict(row["agent_spec"]) if row["agent_spec"] else None
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                session = ChatbotSession(self, session_id, row["owner"], self._take_home(),
                                         True, spec)
            self._remember(session)
        return session

    def list_sessions(self, owner: str | None = None, limit: int = 100,
                      search: str = "") -> list[dict[str, Any]]:
        """Stored sessions, newest first (only ``owner``'s when given; with ``search``,
        those whose title or messages contain all its words)."""
        rows = (self.store.search_sessions(owner, search, limit) if search.strip()
                else self.store.list_sessions(owner=owner, limit=limit))
        return [{"session_id": r["id"], "title": r["title"], "created_at": r["created_at"],
                 "updated_at": r["updated_at"], "custom_agent": r["agent_spec"] is not None}
                for r in rows]

    def delete_session(self, session_id: str, owner: str | None = None) -> bool:
        if self.get_session(session_id, owner=owner) is None:
            return False
        self.chat.deleting(session_id)  # no message to it is stored after the delete
        self.chat.stop(session_id)  # a reply still running or queued goes no further
        with self._lock:
            session = self._sessions.pop(session_id, None)
            if session is not None:
                self._forget(session)
        self._recent.drop(session_id)
        self.store.delete_session(session_id)
        return True

    def choose_branch(self, session: ChatbotSession, message_id: int) -> bool:
        """Show the branch through this version of a message; False while a reply is
        being written (here or by another replica) or the message is not this chat's."""
        if (self.chat.active_run(session.session_id) is not None
                or self.store.runs.running_run(session.session_id) is not None):
            return False
        self._recent.drop(session.session_id)
        return self.store.choose_branch(session.session_id, message_id)

    def set_feedback(self, session: ChatbotSession, message_id: int, score: int | None,
                     comment: str | None = None,
                     expected: tuple[int | None, str] | None = None) -> bool:
        """Thumbs up (1) or down (0) on one of this session's replies, or None to clear;
        ``comment`` None keeps the one written before; ``expected``: only if the stored
        feedback is still that (else False)."""
        return self.store.set_feedback(session.session_id, message_id, score, comment,
                                       expected)

    def rename_session(self, session: ChatbotSession, title: str) -> None:
        self._save(session, title=title)
        self.store.update_session(session.session_id,
                                  title=_one_line(title)[:TITLE_MAX_CHARS])

    def stop_run(self, run_id: str, owner: str) -> bool:
        """Stop a reply by its run's id, for the browser whose chat it is: the page sends
        a Stop click this way too, since the click's own message dies with a page
        reloaded or closed at once. Does not wait for the partial reply's write."""
        row = self.store.runs.run(run_id) if is_valid_session_id(run_id) else None
        session = self.get_session(row["session_id"], owner=owner) if row else None
        if session is None or session.owner != owner:
            return False
        return self.chat.stop(session.session_id, wait=0, run_id=run_id)

    def evict_idle(self, now: float | None = None) -> int:
        """Drop sessions idle longer than SESSION_IDLE_TTL from memory (they stay stored)."""
        now = self._clock() if now is None else now
        with self._lock:
            return self._drop_idle(now - self.settings.SESSION_IDLE_TTL)

    def delete_expired_sessions(self, now: float | None = None) -> int:
        """Delete stored sessions idle longer than SESSION_RETENTION_DAYS (0: keep all)."""
        days = self.settings.SESSION_RETENTION_DAYS
        if not days:
            return 0
        now = time.time() if now is None else now
        return self.store.delete_sessions_idle_since(now - days * 86400)

    @property
    def cached_messages(self) -> int:
        """Messages held in the recent-history cache (bounded; gone with idle sessions)."""
        return self._recent.held

    @property
    def sessions_in_memory(self) -> int:
        return len(self._sessions)

    def _take_home(self) -> int:
        """The next session's preferred member (lock held): members take turns in
        proportion to their weights (smooth weighted round-robin), so at low load too a
        member of weight 2 answers twice as many conversations as one of weight 1."""
        members = self.pool.members
        total = 0.0
        for i, member in enumerate(members):
            self._home_credit[i] += member.weight
            total += member.weight
        home = max(range(len(members)), key=self._home_credit.__getitem__)
        self._home_credit[home] -= total
        return home

    def _remember(self, session: ChatbotSession) -> None:
        """Mark as used now; keep in memory, evicting the idle and the least recent (lock)."""
        now = self._clock()
        session.last_used = now
        if session.session_id in self._sessions:
            self._sessions.move_to_end(session.session_id)
        else:
            self._sessions[session.session_id] = session
            self._unsaved += not session.saved
            self._custom_objects += session.custom is not None
        self._drop_idle(now - self.settings.SESSION_IDLE_TTL)
        while len(self._sessions) > self.settings.MAX_SESSIONS_IN_MEMORY:
            self._forget(self._sessions.popitem(last=False)[1])

    def _drop_idle(self, limit: float) -> int:
        """Forget sessions last used at or before ``limit``, oldest first (lock held)."""
        dropped = 0
        while self._sessions and next(iter(self._sessions.values())).last_used <= limit:
            self._forget(self._sessions.popitem(last=False)[1])
            dropped += 1
        return dropped

    def _forget(self, session: ChatbotSession) -> None:
        """Bookkeeping for a session leaving memory (lock held)."""
        self._recent.drop(session.session_id)
        self._unsaved -= not session.saved
        self._custom_objects -= session.custom is not None

    def _save(self, session: ChatbotSession, title: str = "") -> None:
        """Give the session its row (first message, title or custom agent)."""
        row = self.new_row(session, title)
        if row is not None:
            self.store.ensure_session(session.session_id, **row)
            self.mark_saved(session)

    # -- what the chat engine needs (``core.chat.Conversations``) ---------------------
    def touch(self, session: ChatbotSession) -> None:
        with self._lock:
            self._remember(session)

    def new_row(self, session: ChatbotSession, title: str, again: bool = False
                ) -> dict[str, Any] | None:
        """The row a session without one gets; None if it has one already (``again``:
        its row was deleted meanwhile, so it gets a new one)."""
        if session.saved and not again:
            return None
        return {"owner": session.owner, "title": self.title_for(title),
                "agent_spec": session.spec.to_dict() if session.spec else None}

    @staticmethod
    def title_for(text: str) -> str:
        """A conversation's title taken from its first message: when longer, cut at a
        word with an ellipsis (inside a word if that would lose half the title)."""
        line = _one_line(text)
        if len(line) <= AUTO_TITLE_CHARS:
            return line
        short = textwrap.shorten(line, AUTO_TITLE_CHARS, placeholder="…")
        return short if len(short) > AUTO_TITLE_CHARS // 2 else (
            line[:AUTO_TITLE_CHARS - 1].rstrip() + "…")

    def answered_by(self, session: ChatbotSession) -> tuple[str, bool]:
        """The model recorded on the session's replies, and whether it is custom."""
        if session.spec is not None:
            return session.spec.model, True
        if session.custom is not None:
            return "custom", True
        return self.default_spec.model, False

    def adopt_settings(self, session: ChatbotSession, stored: dict[str, Any] | None
                       ) -> None:
        """The chat's settings as stored, read as a turn starts: another record of it
        (another replica's, or this process's before it was evicted) may have changed
        them. A process-local agent object is not in the store: kept."""
        if session.custom is not None:
            return
        spec = AgentSpec.from_dict(stored) if stored else None
        if spec != session.spec:
            with self._lock:
                session.spec = spec

    def own_answerer(self, session: ChatbotSession) -> Answerer:
        """The chat's own agent as it is now, with the model and prompt it answers with
        (an agent object's prompt is not known here: its tokens are not counted)."""
        model, _ = self.answered_by(session)
        prompt = session.spec.system_prompt if session.spec is not None else ""
        return Answerer(self.agent_for(session), f"custom:{model}", model, prompt)

    def member_answerer(self, lease: Lease) -> Answerer:
        return Answerer(lease.agent, lease.member, lease.model,
                        self.members.spec_of(lease.member).system_prompt)

    async def serve(self, session: ChatbotSession, attempt: Attempt, *,
                    fresh: Callable[[], bool], on_ticket: Callable[[Ticket | None], Any]
                    ) -> None:
        """Route the answer through the pool (fair queue by owner, shared 429 cooldowns,
        failover). A chat's own settings answer in a pool slot too: their agent uses the
        pool's provider account, so its cooldowns, per-owner cap and concurrency hold
        for them. Beside configured members they queue for their own endpoint the same
        way. An agent object given in code answers directly."""
        custom = session.has_custom_agent
        mine = self.own_answerer(session) if custom else None  # as it is when asked
        queue = self._queue_for(session)
        if queue is None:  # a chat's own agent, answering directly
            assert mine is not None
            await attempt(mine, None, _nothing)
            return

        async def on_member(lease: Lease, answered: Callable[[], None]) -> None:
            if mine is not None:  # the slot, not the member's agent; usage is its own
                try:
                    await attempt(mine, None, answered)
                except turns.ReplyCutOff:
                    lease.outcome = "interrupted"  # as for the pool's own agents
                    raise
            else:
                await attempt(self.member_answerer(lease), lease, answered)

        await route(queue, on_member, owner=session.owner or session.session_id,
                    prefer=session.home, fresh=fresh, on_ticket=on_ticket,
                    max_retries=self.settings.OPENAI_MAX_RETRIES,
                    counted=queue is not self.pool or not custom)

    def _queue_for(self, session: ChatbotSession) -> AgentPool | None:
        """Where the chat's request waits: the pool, or beside members the own-settings
        queue for a chat's own settings (None: it answers directly, as an agent object
        given in code does, or settings beside members with no key for them)."""
        if not session.has_custom_agent:
            return self.pool
        if session.custom is not None:
            return None
        return self.own_endpoint if self.settings.MEMBERS else self.pool

    def queue_place(self, run: Run) -> Place | None:
        """Where a run waiting for a pool member stands (None: it is not waiting)."""
        ticket = run.ticket
        if ticket is None:
            return None
        return next((place for queue in self.members.queues
                     if (place := queue.place(ticket)) is not None), None)

    def mark_saved(self, session: ChatbotSession) -> None:
        with self._lock:
            if not session.saved:
                if self._sessions.get(session.session_id) is session:
                    self._unsaved -= 1
                session.saved = True

    # -- agents ---------------------------------------------------------------------
    def custom_agent(self, spec: AgentSpec) -> Agent:
        """A built agent for this spec, shared by sessions with the same spec (LRU-bounded)."""
        with self._lock:
            agent = self._custom_agents.get(spec)
            if agent is not None:
                self._custom_agents.move_to_end(spec)
                return agent
        agent = self.agent_factory(spec)
        with self._lock:
            agent = self._custom_agents.setdefault(spec, agent)
            while len(self._custom_agents) > CUSTOM_AGENT_CACHE:
                self._custom_agents.popitem(last=False)
        return agent

    def agent_for(self, session: ChatbotSession) -> Agent:
        """The agent the session talks to: its custom agent, or its home pool agent."""
        if session.custom is not None:
            return session.custom
        if session.spec is not None:
            return self.custom_agent(session.spec)
        return self.pool.agents[session.home]

    def custom_models(self) -> tuple[str, ...] | None:
        """The models a chat's own agent may use (None: any). A user picks a model the
        operator pays for: the pool's own (with members configured, CHAT_MODEL: a chat's
        own agent talks to OPENAI_BASE_URL, none of theirs) and CUSTOM_MODELS."""
        configured = [m.strip() for m in self.settings.CUSTOM_MODELS.split(",") if m.strip()]
        if "*" in configured:
            return None
        own = ((self.settings.CHAT_MODEL,) if self.settings.MEMBERS
               else (m.model for m in self.pool.members))
        return tuple(dict.fromkeys([*own, *configured]))

    def settings_offered(self, session: ChatbotSession) -> AgentSpec:
        """What a chat's settings form starts from: its own settings, else the shared
        ones with a model it may use (beside members, the first offered: CHAT_MODEL,
        which its endpoint serves, not a member's)."""
        if session.spec is not None:
            return session.spec
        offered = None if self.settings.offline else self.custom_models()
        if offered and self.default_spec.model not in offered:
            return dataclasses.replace(self.default_spec, model=offered[0])
        return self.default_spec

    def set_agent(self, session: ChatbotSession, value: Agent | AgentSpec | None) -> None:
        """An AgentSpec (persisted), any agent object (this process only) or None.
        A spec's model must be one of ``custom_models()``, or the chat's own already
        (ValueError); so must its agent build."""
        spec = value if isinstance(value, AgentSpec) else None
        allowed = None if self.settings.offline else self.custom_models()
        current = session.spec.model if session.spec is not None else None
        if (spec is not None and allowed is not None and spec.model not in allowed
                and spec.model != current):
            raise ValueError(f"The model {spec.model!r} is not offered here; choose one of: "
                             f"{', '.join(allowed)}.")
        custom = None if value is None or spec is not None else value
        if spec is not None:  # built now: a bad spec fails here, not mid-chat
            try:
                self.custom_agent(spec)
            except Exception as exc:  # e.g. no API key for this endpoint
                raise ValueError("An agent cannot be built with these settings "
                                 f"({type(exc).__name__}).") from None
        with self._lock:
            if self._sessions.get(session.session_id) is session:
                self._custom_objects += (custom is not None) - (session.custom is not None)
            session.custom, session.spec = custom, spec
        if spec is not None:
            self._save(session)
        if session.saved:
            self.store.update_session(session.session_id,
                                      agent_spec=spec.to_dict() if spec else None)

    # -- stats ----------------------------------------------------------------------
    def get_stats(self) -> dict[str, Any]:
        """Aggregates only: no message text and no session ids."""
        now = self._clock()
        with self._lock:
            unsaved, custom_objects = self._unsaved, self._custom_objects
            in_memory = len(self._sessions)
            active = 0
            for session in reversed(self._sessions.values()):
                if session.last_used < now - ACTIVE_WINDOW:
                    break
                active += session.saved  # as Sessions: an empty chat is not one yet
        pool = self.pool.snapshot()
        return {
            "total_sessions": self.store.count_sessions(),
            "total_messages": self.store.count_chat_messages(),
            "page_views": self.page_views,
            "empty_chats_open": unsaved,
            "agent_pool_size": self.pool.size,
            "sessions_with_custom_agents": self.store.count_custom_sessions() + custom_objects,
            "active_sessions": active,
            "sessions_in_memory": in_memory,
            "offline_model": self.settings.offline,
            "model": self.default_spec.model,
            "pool": pool,
            "pool_queued": self.pool.queued(),
            "pool_timeouts": self.pool.timeouts,
            "pool_in_flight": sum(a["in_flight"] for a in pool),
            "runs_in_flight": self.chat.in_flight(),
            "runs": self.store.runs.run_counts(),
            # beside members, chats with settings of their own queue apart (None otherwise)
            "own_settings": None if self.own_endpoint is None else {
                **self.own_endpoint.snapshot()[0], "queued": self.own_endpoint.queued()},
        }

    def get_usage(self, max_age: float = 0.0) -> dict[str, Any]:
        """Tokens, cost and latency of every reply stored: per model, per owner
        (anonymised), custom agents vs the shared pool, per pool member. A report at
        most ``max_age`` seconds old is reused (stats pages open in many tabs)."""
        now = self._clock()
        with self._lock:
            cached = self._usage_cache
        if cached is not None and now - cached[0] < max_age:
            return cached[1]
        report = self.usage.summary()
        with self._lock:
            self._usage_cache = (now, report)
        return report

    def dismiss_notice(self, owner: str, notice: str) -> None:
        """Remember that this browser dismissed a notice (this process, LRU-bounded)."""
        with self._lock:
            self._dismissed[(owner, notice)] = True
            self._dismissed.move_to_end((owner, notice))
            while len(self._dismissed) > DISMISSED_NOTICES:
                self._dismissed.popitem(last=False)

    def notice_dismissed(self, owner: str, notice: str) -> bool:
        with self._lock:
            return (owner, notice) in self._dismissed

    def page_viewed(self) -> None:
        """A page view (each browser tab's first page run): counted apart from sessions."""
        with self._lock:
            self.page_views += 1

    def close(self) -> None:
        """Stop the runs still going (their partial replies are stored, marked
        interrupted by the shutdown: retryable), then the store."""
        self.chat.shutting_down = True
        self.worker.close()
        self.store.close()


def _nothing() -> None:
    pass


def _plain_values(settings: Settings) -> dict[str, Any]:
    """Settings as the values they were built from (secrets unwrapped)."""
    values = settings.model_dump()
    return {k: (v.get_secret_value() if hasattr(v, "get_secret_value") else v)
            for k, v in values.items() if v is not None}


def _one_line(text: str) -> str:
    return " ".join(text.split())

