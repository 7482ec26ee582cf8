"""The shared agent pool: a fair, rate-aware router over its members.

A member is one agent behind one endpoint (``AGENT_POOL_SIZE=N`` gives N identical
members; ``[[members]]`` in the secrets gives named ones). Each request borrows the least
busy member relative to its weight, within the member's ``max_concurrency``.

Requests that cannot be served at once wait in a queue that is fair across owners (one
browser each): owners take turns, round-robin, and one owner holds at most
``max_per_owner`` slots at once, so one person sending 40 messages does not make everybody
else wait behind all 40. Waiting is shared by threads and asyncio tasks, bounded by
``acquire_timeout``.

Members that share a provider account (a *quota*) share its rate limit: a 429 puts the
quota in cooldown for every request, and after the cooldown one request probes before
the others follow. A member whose key is refused, or that fails again and again, is
marked failing and skipped while other members can serve. All methods are thread-safe.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

HEALTHY, COOLING, PROBING, FAILING = "healthy", "cooling down", "probing", "failing"
PROVIDER_WAIT_MAX = 120.0  # a provider's cooldown up to this is waited out, counted down
FAILING_AFTER = 3        # consecutive transient failures that mark a member failing
FAILING_FOR = 30.0       # seconds a failing member is skipped before it is tried again
REFUSED_FOR = 300.0      # ... and one whose key was refused
KEY_REFUSED = "key refused"  # why a member is skipped (``Member.failing_for``)
DEFAULT_SERVICE = 5.0    # seconds a reply is assumed to take before any was timed


class PoolTimeout(RuntimeError):
    """Every member stayed busy (or cooling down) for the whole wait."""


class ProviderCooldown(PoolTimeout):
    """The provider asked us to wait longer than a request may: its words, a sentence."""


@dataclass(eq=False)
class Member:
    """One agent behind one endpoint, with its limits and live counters."""

    name: str
    agent: Any
    max_concurrency: int = 8
    weight: float = 1.0
    model: str = ""
    quota: str = ""          # members with the same quota share one provider rate limit
    version: int = 1         # bumped by each live reconfiguration
    in_flight: int = 0
    served: int = 0
    errors: int = 0          # the provider or the agent failed
    stopped: int = 0         # the user stopped the reply
    interrupted: int = 0     # the reply was cut off (its stream dropped)
    rate_limited: int = 0    # 429s seen
    busy_seconds: float = 0.0
    wait_seconds: float = 0.0
    failures: int = 0        # consecutive failures
    failing_until: float = 0.0
    failing_for: str = ""    # why it is skipped: "key refused", "errors"

    def __post_init__(self) -> None:
        self.quota = self.quota or self.name


@dataclass(slots=True)
class Lease:
    """One borrowed member; ``waited`` is the time spent queueing for it.

    The borrower may set ``outcome`` ("interrupted") before giving it back; otherwise a
    cancellation counts as stopped and any other exception as an error.
    """

    index: int
    agent: Any
    waited: float
    member: str = ""
    model: str = ""
    version: int = 1
    outcome: str | None = None


@dataclass(frozen=True, slots=True)
class Place:
    """Where a waiting request stands: its place in the queue and an estimate."""

    position: int          # 1 = next to be served
    waiting: int           # requests waiting in all
    estimate: float        # seconds until it is likely served
    cooldown: float        # seconds left of a provider's rate-limit cooldown (0: none)
    capped: bool = False   # its owner already holds ``max_per_owner`` slots
    overdue: bool = False  # the reply it waits for runs longer than usual: a low guess


class Ticket:
    """A request's place in the queue; the borrower may ask the pool where it stands."""

    __slots__ = ("owner", "prefer", "exclude", "index", "probe", "event", "loop", "future",
                 "counted")

    def __init__(self, owner: str | None = None, prefer: int | None = None,
                 exclude: Sequence[str] = (), counted: bool = True) -> None:
        self.owner = owner
        self.counted = counted  # False: a chat's own agent in the slot, not the member's
        self.prefer = prefer
        self.exclude = frozenset(exclude)
        self.index: int | None = None
        self.probe = False
        self.event: threading.Event | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.future: asyncio.Future[None] | None = None

    def wake(self) -> None:
        if self.event is not None:
            self.event.set()
        elif self.future is not None:
            assert self.loop is not None
            if asyncio._get_running_loop() is self.loop:  # no write to the loop's pipe
                _resolve(self.future)
            else:
                self.loop.call_soon_threadsafe(_resolve, self.future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


@dataclass(slots=True)
class _Quota:
    """A provider account's rate-limit state, shared by its members."""

    until: float = 0.0            # wall-clock end of the cooldown
    probe_due: bool = False       # the cooldown ended: one request goes first
    probe: Ticket | None = None   # ... and it is in flight (an older one does not count)
    timer: threading.Timer | None = field(default=None, repr=False)


class AgentPool:
    """Members with concurrency limits and weights, a fair queue, shared cooldowns."""

    def __init__(self, agents: Sequence[Any], max_concurrency: int = 8,
                 acquire_timeout: float = 30.0, max_per_owner: int | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        if not agents:
            raise ValueError("an agent pool needs at least one agent")
        self._members = [a if isinstance(a, Member) else
                         Member(f"pool:{i}", a, max_concurrency, quota="pool")
                         for i, a in enumerate(agents)]
        self.acquire_timeout = acquire_timeout
        self.max_per_owner = max_per_owner
        self._clock = clock
        self._wall = wall
        self._lock = threading.Lock()
        self._queues: OrderedDict[str | None, deque[Ticket]] = OrderedDict()
        self._held: Counter[str | None] = Counter()
        self._since: dict[Ticket, float] = {}  # each slot's holder: when it was served
        self._quotas: dict[str, _Quota] = {m.quota: _Quota() for m in self._members}
        self._cursor = 0
        self.timeouts = 0
        self.on_cooldown: Callable[[str, float], None] | None = None  # shares a 429

    # -- members --------------------------------------------------------------------
    @property
    def size(self) -> int:
        return len(self._members)

    @property
    def agents(self) -> tuple[Any, ...]:
        return tuple(m.agent for m in self._members)

    @property
    def members(self) -> tuple[Member, ...]:
        return tuple(self._members)

    def member(self, name: str) -> Member:
        for member in self._members:
            if member.name == name:
                return member
        raise KeyError(name)

    def replace_agent(self, name: str, agent: Any, model: str) -> int:
        """A member's new agent, for requests from now on; leases keep the old one.
        Errors may have been the old model's: they are forgotten; a refused key is the
        same key still, and stays skipped."""
        with self._lock:
            member = self.member(name)
            member.agent, member.model = agent, model
            member.version += 1
            if member.failing_for != KEY_REFUSED or member.failing_until <= self._wall():
                member.failures, member.failing_until = 0, 0.0
            self._hand_over()
            return member.version

    # -- choosing a member (lock held) -----------------------------------------------
    def _free(self, now: float) -> list[int]:
        """Members that can take a request now: room left, their quota neither cooling
        down nor waiting for a probe's answer."""
        quotas = self._quotas
        return [i for i, m in enumerate(self._members)
                if m.in_flight < m.max_concurrency and now >= quotas[m.quota].until
                and quotas[m.quota].probe is None]

    def _pick(self, ticket: Ticket, free: list[int]) -> int | None:
        """The member for this ticket among the ``free`` ones: least busy for its weight,
        healthy first.

        A failing member serves only when every member the ticket may use is failing (its
        error is then the user's answer); ties go to ``prefer``, else round-robin.
        """
        members = self._members
        count = len(members)
        allowed = ([i for i in range(count) if members[i].name not in ticket.exclude]
                   if ticket.exclude else range(count))
        if not allowed:
            return None
        now = self._wall()
        healthy = [i for i in allowed if members[i].failing_until <= now]
        candidates = healthy or allowed
        chosen = None if len(candidates) == count else set(candidates)  # None: all
        start = self._cursor if ticket.prefer is None else ticket.prefer % count
        best: int | None = None
        best_rank = (0.0, 0)
        for i in free:
            if chosen is not None and i not in chosen:
                continue
            rank = (members[i].in_flight / members[i].weight, (i - start) % count)
            if best is None or rank < best_rank:
                best, best_rank = i, rank
        if best is not None and ticket.prefer is None:
            self._cursor = (best + 1) % count
        return best

    def _grant(self, ticket: Ticket, index: int) -> None:
        member = self._members[index]
        quota = self._quotas[member.quota]
        member.in_flight += 1
        self._held[ticket.owner] += 1
        self._since[ticket] = self._clock()
        ticket.index = index
        if quota.probe_due:
            quota.probe_due, quota.probe, ticket.probe = False, ticket, True

    def _capped(self, owner: str | None) -> bool:
        return (owner is not None and self.max_per_owner is not None
                and self._held[owner] >= self.max_per_owner)

    def _hand_over(self) -> None:
        """Serve waiting tickets: owners take turns; an owner at its cap is skipped.

        O(1) per call when nothing is free, however many wait: no member with room ends
        it at once, and a ticket that may use every member failing to get one means no
        other such ticket can (only a failover's excluded member makes a difference).
        """
        granted = True
        while granted and self._queues:
            granted = False
            free = self._free(self._wall())
            if not free:
                return
            plain_failed = False
            for owner, queue in self._queues.items():
                if self._capped(owner):
                    continue
                ticket = queue[0]
                if plain_failed and not ticket.exclude:
                    continue
                index = self._pick(ticket, free)
                if index is None:
                    plain_failed = plain_failed or not ticket.exclude
                    continue
                queue.popleft()
                if queue:
                    self._queues.move_to_end(owner)
                else:
                    del self._queues[owner]
                self._grant(ticket, index)
                try:
                    ticket.wake()
                except RuntimeError:  # its event loop is closed: nobody will use the slot
                    self._ungrant(ticket)
                granted = True
                break

    def _ungrant(self, ticket: Ticket) -> None:
        assert ticket.index is not None
        member = self._members[ticket.index]
        member.in_flight -= 1
        self._held[ticket.owner] -= 1
        self._since.pop(ticket, None)
        if self._held[ticket.owner] <= 0:
            del self._held[ticket.owner]
        if ticket.probe:
            quota = self._quotas[member.quota]
            if quota.probe is ticket:  # it ended without an answer: the next one probes
                quota.probe_due, quota.probe = True, None
            ticket.probe = False
        ticket.index = None

    # -- queueing ---------------------------------------------------------------------
    def enqueue(self, ticket: Ticket) -> None:
        """Queue a ticket (served at once if it may be); it holds its slot until
        ``withdraw``. The leases below use this; so can a scheduler test."""
        with self._lock:
            self._queues.setdefault(ticket.owner, deque()).append(ticket)
            self._hand_over()

    def withdraw(self, ticket: Ticket, timed_out: bool = False) -> None:
        """A ticket gives up: it leaves the queue, or gives its slot back."""
        with self._lock:
            if ticket.index is None:
                queue = self._queues.get(ticket.owner)
                if queue is not None and ticket in queue:
                    queue.remove(ticket)
                    if not queue:
                        del self._queues[ticket.owner]
                self.timeouts += timed_out
                return
            self._ungrant(ticket)
            self._hand_over()

    @staticmethod
    def _ticket(ticket: Ticket | None, owner: str | None, prefer: int | None,
                exclude: Sequence[str]) -> Ticket:
        ticket = ticket or Ticket()
        ticket.owner, ticket.prefer, ticket.exclude = owner, prefer, frozenset(exclude)
        ticket.index, ticket.probe = None, False
        return ticket

    def _timeout_error(self, timeout: float) -> PoolTimeout:
        now = self._wall()
        with self._lock:
            left = min(q.until for q in self._quotas.values()) - now
            failing = sum(m.failing_until > now for m in self._members)
        if left > 0:
            return ProviderCooldown(f"The model provider asked us to slow down for longer "
                                    f"than {timeout:g} s; try again in {left:.0f} s.")
        if failing == self.size:  # every one failing serves anyway: all were busy
            failing = 0
        working = self.size - failing
        agents = "the agent was" if working == 1 else f"all {working} agents were"
        failed = f" ({failing} more {'is' if failing == 1 else 'are'} failing)" if failing else ""
        return PoolTimeout(f"{agents} busy for {timeout:g} s{failed}; try again")

    def _usable_at(self, ticket: Ticket) -> float:
        """When the first member this ticket may use is (or was) out of its provider's
        cooldown, wall clock (0: none ever cooled). Called under the lock."""
        return min((self._quotas[m.quota].until for m in self._members
                    if m.name not in ticket.exclude), default=0.0)

    def _cooling_for(self, ticket: Ticket) -> float:
        """Seconds until a member this ticket may use is out of its provider's cooldown
        (0: one is not cooling down). Called under the lock."""
        return max(0.0, self._usable_at(ticket) - self._wall())

    def _too_long_to_wait(self, ticket: Ticket) -> ProviderCooldown | None:
        """A cooldown longer than anyone should watch counting down: said at once."""
        with self._lock:
            left = self._cooling_for(ticket)
        if left <= PROVIDER_WAIT_MAX:
            return None
        return ProviderCooldown(f"The model provider asked us to slow down for "
                                f"{_duration(left)}; try again then.")

    def _waited_out(self, ticket: Ticket, timeout: float, since: float
                    ) -> tuple[bool, float]:
        """The wait (begun at ``since``, wall clock) ran out: whether the ticket was
        served meanwhile, else how much longer it waits (0: it gives up). A provider's
        cooldown, counted down on the page, is waited out (up to ``PROVIDER_WAIT_MAX``)
        and the queue's timeout counts from its end: what was promised as "continuing in
        N s" does not end in an error, however late in the cooldown one asked."""
        now = self._wall()
        with self._lock:
            if ticket.index is not None:
                return True, 0.0
            usable = self._usable_at(ticket)
        if usable <= since or usable - now > PROVIDER_WAIT_MAX:
            return False, 0.0  # no cooldown during this wait, or one too long to watch
        return False, max(0.0, usable + timeout - now)

    @contextmanager
    def lease(self, timeout: float | None = None, prefer: int | None = None,
              owner: str | None = None, exclude: Sequence[str] = (),
              ticket: Ticket | None = None) -> Iterator[Lease]:
        """Borrow a member from a thread; raises PoolTimeout if none frees up in time."""
        timeout = self.acquire_timeout if timeout is None else timeout
        ticket = self._ticket(ticket, owner, prefer, exclude)
        if (too_long := self._too_long_to_wait(ticket)) is not None:
            raise too_long
        ticket.event = threading.Event()
        start, since = self._clock(), self._wall()
        self.enqueue(ticket)
        wait = timeout
        while ticket.index is None and not ticket.event.wait(wait):
            served, wait = self._waited_out(ticket, timeout, since)
            if served:
                break
            if not wait:
                self.withdraw(ticket, True)
                raise self._timeout_error(timeout)
        with self._holding(self._lease(ticket, self._clock() - start)) as lease:
            yield lease

    @asynccontextmanager
    async def alease(self, timeout: float | None = None, prefer: int | None = None,
                     owner: str | None = None, exclude: Sequence[str] = (),
                     ticket: Ticket | None = None) -> AsyncIterator[Lease]:
        """Borrow a member from asyncio without blocking the event loop."""
        timeout = self.acquire_timeout if timeout is None else timeout
        ticket = self._ticket(ticket, owner, prefer, exclude)
        if (too_long := self._too_long_to_wait(ticket)) is not None:
            raise too_long
        loop = ticket.loop = asyncio.get_running_loop()
        ticket.future = loop.create_future()
        start, since = self._clock(), self._wall()
        self.enqueue(ticket)
        wait = timeout
        while ticket.index is None:
            try:
                async with asyncio.timeout(wait):
                    await ticket.future
            except TimeoutError:
                served, wait = self._waited_out(ticket, timeout, since)
                if served:
                    break
                if not wait:
                    self.withdraw(ticket, True)
                    raise self._timeout_error(timeout) from None
                with self._lock:  # the timed-out wait cancelled the future it awaited
                    if ticket.index is None:
                        ticket.future = loop.create_future()
            except asyncio.CancelledError:
                self.withdraw(ticket, False)
                raise
        with self._holding(self._lease(ticket, self._clock() - start)) as lease:
            yield lease

    def _lease(self, ticket: Ticket, waited: float) -> tuple[Lease, Ticket]:
        assert ticket.index is not None
        member = self._members[ticket.index]
        return Lease(ticket.index, member.agent, waited, member.name, member.model,
                     member.version), ticket

    @contextmanager
    def _holding(self, leased: tuple[Lease, Ticket]) -> Iterator[Lease]:
        """Time the lease, count how it ended, and give the slot back."""
        lease, ticket = leased
        began, outcome = self._clock(), "ok"
        try:
            yield lease
        except (asyncio.CancelledError, GeneratorExit, KeyboardInterrupt):
            outcome = lease.outcome or "stopped"
            raise
        except BaseException:
            outcome = lease.outcome or "error"
            raise
        finally:
            self._release(lease, ticket, self._clock() - began, outcome)

    def _release(self, lease: Lease, ticket: Ticket, busy: float, outcome: str) -> None:
        with self._lock:
            member = self._members[lease.index]
            if ticket.counted:  # the member's own figures, as its latency and usage are
                member.served += 1
                member.errors += outcome == "error"
                member.stopped += outcome == "stopped"
                member.interrupted += outcome == "interrupted"
                member.busy_seconds += busy
                member.wait_seconds += lease.waited
            if outcome == "ok":
                self._succeeded(member, ticket)
            self._ungrant(ticket)
            self._hand_over()

    # -- health -----------------------------------------------------------------------
    def _succeeded(self, member: Member, ticket: Ticket) -> None:
        member.failures, member.failing_until = 0, 0.0
        if ticket.probe:
            quota = self._quotas[member.quota]
            if quota.probe is ticket:
                quota.probe_due, quota.probe = False, None
            ticket.probe = False

    def report_ok(self, lease: Lease, ticket: Ticket) -> None:
        """The member answered (a first token): a probe lets the others follow."""
        with self._lock:
            if ticket.index is not None:
                self._succeeded(self._members[lease.index], ticket)
                self._hand_over()

    def report_failure(self, lease: Lease, refused: bool = False, reason: str = ""
                       ) -> None:
        """The member failed (connection, timeout, 5xx: ``reason`` says which, for the
        pool view) or refused its key."""
        with self._lock:
            member = self._members[lease.index]
            member.failures += 1
            if refused or member.failures >= FAILING_AFTER:
                member.failing_until = self._wall() + (REFUSED_FOR if refused
                                                       else FAILING_FOR)
                member.failing_for = (KEY_REFUSED if refused else
                                      f"errors: {reason}" if reason else "errors")

    def cool_down(self, name: str, seconds: float, share: bool = True) -> float:
        """The provider of this member asked to wait: its whole quota waits; returns the
        wall-clock end of the cooldown."""
        with self._lock:
            member = self.member(name)
            member.rate_limited += 1
            until = self._cool(member.quota, self._wall() + seconds)
        if share and self.on_cooldown is not None:
            self.on_cooldown(member.quota, until)
        return until

    def apply_cooldowns(self, cooldowns: dict[str, float]) -> None:
        """Cooldowns another replica saw (quota -> wall-clock end)."""
        now = self._wall()
        with self._lock:
            for quota, until in cooldowns.items():
                if quota in self._quotas and until > now and until > self._quotas[quota].until:
                    self._cool(quota, until)

    def _cool(self, name: str, until: float) -> float:
        quota = self._quotas[name]
        quota.until = max(quota.until, until)
        quota.probe_due, quota.probe = True, None
        self._arm(name)
        return quota.until

    def _arm(self, name: str) -> None:
        """Wake the queue when this quota's cooldown ends (lock held)."""
        quota = self._quotas[name]
        if quota.timer is not None:
            quota.timer.cancel()
        quota.timer = threading.Timer(max(0.0, quota.until - self._wall()) + 0.005,
                                      self._cooled, (name,))
        quota.timer.daemon = True
        quota.timer.start()

    def _cooled(self, name: str) -> None:
        with self._lock:
            if self._quotas[name].until > self._wall():  # woken early (the clock moved)
                self._arm(name)
                return
            self._hand_over()

    def can_fail_over(self, name: str) -> bool:
        """Another member that is not failing can take a request now. (If none can, the
        retry goes to whichever member frees first, the one that failed included: waiting
        for a busy member while the one that failed sits idle, then saying that all were
        busy, told the user nothing true.)"""
        now = self._wall()
        with self._lock:
            return any(self._members[i].name != name
                       and self._members[i].failing_until <= now for i in self._free(now))

    # -- reporting ----------------------------------------------------------------------
    def _state(self, member: Member, now: float) -> tuple[str, float]:
        """Its state and the seconds it lasts (a cooldown, a failing member skipped).
        A cooldown that ended is "probing" only while the probe is out: until a request
        comes, nothing is."""
        quota = self._quotas[member.quota]
        if member.failing_until > now:
            return FAILING, member.failing_until - now
        if quota.until > now:
            return COOLING, quota.until - now
        if quota.probe is not None:
            return PROBING, 0.0
        return HEALTHY, 0.0

    def snapshot(self) -> list[dict[str, Any]]:
        """Per-member counters and state, consistent with each other at one instant."""
        now = self._wall()
        with self._lock:
            rows = []
            for i, m in enumerate(self._members):
                state, left = self._state(m, now)
                rows.append({
                    "agent": i, "name": m.name, "model": m.model, "version": m.version,
                    "state": state, "cooldown_seconds": round(left, 1),
                    "failing_for": m.failing_for if state == FAILING else "",
                    "in_flight": m.in_flight, "max_concurrency": m.max_concurrency,
                    "weight": m.weight, "served": m.served, "errors": m.errors,
                    "stopped": m.stopped, "interrupted": m.interrupted,
                    "rate_limited": m.rate_limited,
                    "busy_seconds": round(m.busy_seconds, 6),
                    "queue_wait_seconds": round(m.wait_seconds, 6),
                })
            return rows

    def queued(self) -> int:
        with self._lock:
            return sum(len(q) for q in self._queues.values())

    def held(self, owner: str) -> int:
        with self._lock:
            return self._held[owner]

    def place(self, ticket: Ticket) -> Place | None:
        """Where a waiting ticket stands (None once it is served or gone)."""
        now = self._wall()
        with self._lock:
            queue = self._queues.get(ticket.owner)
            if ticket.index is not None or queue is None or ticket not in queue:
                return None
            mine = queue.index(ticket)
            ahead, before = mine, True
            for owner, other in self._queues.items():  # one round serves each owner once
                if owner == ticket.owner:
                    before = False
                    continue
                ahead += min(len(other), mine + 1 if before else mine)
            waiting = sum(len(q) for q in self._queues.values())
            served = sum(m.served for m in self._members)
            busy = sum(m.busy_seconds for m in self._members)
            per_reply = busy / served if served else DEFAULT_SERVICE
            usable = [i for i, m in enumerate(self._members) if m.name not in ticket.exclude]
            healthy = [i for i in usable if self._members[i].failing_until <= now] or usable
            cooling = {i: max(0.0, self._quotas[self._members[i].quota].until - now)
                       for i in healthy}
            cooldown = min(cooling.values(), default=0.0)  # all of them cooling down
            clock = self._clock()
            running: dict[int, list[float]] = {}
            for holder, since in self._since.items():
                running.setdefault(holder.index, []).append(clock - since)
            slots = [slot for i in healthy for slot in _member_frees(
                self._members[i].max_concurrency, cooling[i], per_reply,
                running.get(i, []))]
            starts, overdue = _starts_in(ahead + 1, slots, per_reply)
            return Place(ahead + 1, waiting, starts, cooldown, self._capped(ticket.owner),
                         overdue)


def _member_frees(capacity: int, cooling: float, per_reply: float, running: list[float]
                  ) -> list[tuple[float, bool]]:
    """When each of a member's slots likely frees (seconds), and whether the reply in it
    has already run longer than usual. A reply frees its slot when it has run
    ``per_reply`` seconds (one already past that: in a quarter of that, a guess that then
    stands still: hence the flag); a member cooling down serves no one before its end."""
    busy = [(max(per_reply - ran, per_reply / 4), ran > per_reply) for ran in running]
    idle = [(0.0, False)] * max(0, capacity - len(busy))
    return [(max(cooling, frees), overdue) for frees, overdue in idle + busy][:capacity]


def _starts_in(turn: int, slots: list[tuple[float, bool]], per_reply: float
               ) -> tuple[float, bool]:
    """Seconds until the ``turn``-th waiting request likely starts, and whether the
    reply whose slot it waits for has already run longer than usual: the slots the
    ticket may use, soonest free first, then each serves the next every ``per_reply``;
    so the estimate counts down while the replies ahead are written."""
    frees = sorted(slots) or [(per_reply, False)]
    rounds, index = divmod(turn - 1, len(frees))
    starts, overdue = frees[index]
    return starts + rounds * per_reply, overdue


def _duration(seconds: float) -> str:
    """``45 s``, ``3 min``, ``2 h``: how long, as a person says it."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.0f} h"
