"""The pool's queue as a scheduler: fair across owners, capped per owner, never leaking a
slot; checked on random sequences of arrivals, releases, cancellations and timeouts."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from core.pool import DEFAULT_SERVICE, AgentPool, Member, Ticket

OWNERS = ["a", "b", "c", "d"]
CAP = 2

OPERATIONS = st.lists(st.one_of(
    st.tuples(st.just("arrive"), st.sampled_from(OWNERS)),
    st.tuples(st.just("release"), st.integers(0, 50)),   # a served request ends
    st.tuples(st.just("cancel"), st.integers(0, 50)),    # a waiting one gives up
), max_size=80)


class Watcher:
    """Replays operations and checks, after each, what must always hold."""

    def __init__(self, slots: list[int]) -> None:
        self.pool = AgentPool([f"agent{i}" for i in range(len(slots))], max_per_owner=CAP)
        for member, limit in zip(self.pool.members, slots):
            member.max_concurrency = limit
        self.tickets: list[Ticket] = []
        self.granted: set[Ticket] = set()
        self.bypassed: dict[Ticket, int] = {}

    def waiting(self) -> list[Ticket]:
        return [t for t in self.tickets if t.index is None]

    def heads(self) -> list[Ticket]:
        """Waiting tickets first in their owner's line whose owner is under the cap."""
        firsts: dict[str | None, Ticket] = {}
        for ticket in self.waiting():
            firsts.setdefault(ticket.owner, ticket)
        return [t for o, t in firsts.items() if self.pool.held(o) < CAP]

    def apply(self, operation: tuple[str, object]) -> None:
        kind, arg = operation
        heads = self.heads()
        if kind == "arrive":
            ticket = Ticket(owner=str(arg))
            self.tickets.append(ticket)
            self.pool.enqueue(ticket)
        elif kind == "release" and self.granted:
            ticket = sorted(self.granted, key=self.tickets.index)[int(arg) % len(self.granted)]
            self.granted.discard(ticket)
            self.tickets.remove(ticket)
            self.pool.withdraw(ticket)
        elif kind == "cancel" and self.waiting():
            waiting = self.waiting()
            ticket = waiting[int(arg) % len(waiting)]
            self.tickets.remove(ticket)
            self.pool.withdraw(ticket, timed_out=True)
        newly = [t for t in self.tickets if t.index is not None and t not in self.granted]
        self.granted.update(newly)
        for head in heads:
            if head in self.tickets and head.index is None:
                self.bypassed[head] = self.bypassed.get(head, 0) + sum(
                    t.owner != head.owner for t in newly)
        self.check()

    def check(self) -> None:
        members = self.pool.members
        assert all(m.in_flight <= m.max_concurrency for m in members)
        assert sum(m.in_flight for m in members) == len(self.granted)  # nothing leaked
        for owner in OWNERS:
            held = sum(t.owner == owner for t in self.granted)
            assert held == self.pool.held(owner) <= CAP
        assert self.pool.queued() == len(self.waiting())
        places = [self.pool.place(t) for t in self.waiting()]
        assert all(p is not None and 0 <= p.estimate < 10**6 for p in places)
        # a head of line, eligible, is passed by each other owner at most once
        assert all(count <= len(OWNERS) - 1 for count in self.bypassed.values())
        # work-conserving: nobody waits while a slot is free and their owner may take it
        free = sum(m.max_concurrency - m.in_flight for m in members)
        if free:
            assert not self.heads()


@settings(max_examples=300, deadline=None)
@given(OPERATIONS, st.lists(st.integers(1, 3), min_size=1, max_size=3))
def test_the_queue_is_fair_capped_and_leaks_nothing(operations, slots):
    watcher = Watcher(slots)
    for operation in operations:
        watcher.apply(operation)
    while watcher.granted:  # everything served ends: every waiter gets served
        ticket = min(watcher.granted, key=watcher.tickets.index)
        watcher.apply(("release", watcher.tickets.index(ticket) and 0))
    assert not watcher.waiting()
    assert watcher.pool.queued() == 0 and not any(m.in_flight for m in watcher.pool.members)


def test_one_owner_with_many_requests_does_not_hold_back_the_others():
    pool = AgentPool(["agent"], max_concurrency=2, max_per_owner=2)
    flood = [Ticket(owner="flood") for _ in range(40)]
    for ticket in flood:
        pool.enqueue(ticket)
    late = [Ticket(owner=f"user{i}") for i in range(5)]
    for ticket in late:
        pool.enqueue(ticket)
    order: list[Ticket] = []  # in the order they were granted
    while len(order) < 45:
        order += [t for t in flood + late if t.index is not None and t not in order]
        pool.withdraw(next(t for t in order if t.index is not None))  # the oldest ends
    order = [t.owner for t in order]
    latest = max(order.index(f"user{i}") for i in range(5))
    assert latest <= 2 + 2 * 5  # two in flight, then one flood per latecomer at most
    assert order.count("flood") == 40


def test_a_queued_request_knows_its_place_and_an_estimate():
    pool = AgentPool(["agent"], max_concurrency=1, max_per_owner=2)
    first = Ticket(owner="a")
    pool.enqueue(first)
    mine = [Ticket(owner="a"), Ticket(owner="a")]
    other = Ticket(owner="b")
    for ticket in [*mine, other]:
        pool.enqueue(ticket)
    assert pool.place(first) is None  # served
    assert [pool.place(t).position for t in mine] == [1, 3]
    assert pool.place(other).position == 2  # round-robin: b goes before a's second
    assert pool.place(other).waiting == 3 and pool.place(other).estimate > 0


def test_the_estimate_counts_down_while_the_replies_ahead_are_written():
    now = [100.0]
    pool = AgentPool(["agent"], max_concurrency=1, clock=lambda: now[0])
    holder, next_one, then = Ticket(owner="a"), Ticket(owner="b"), Ticket(owner="c")
    for ticket in (holder, next_one, then):
        pool.enqueue(ticket)
    assert pool.place(next_one).estimate == DEFAULT_SERVICE  # a reply has just begun
    assert pool.place(then).estimate == 2 * DEFAULT_SERVICE
    now[0] += 3
    assert pool.place(next_one).estimate == DEFAULT_SERVICE - 3
    assert not pool.place(next_one).overdue
    now[0] += 60  # far past the usual time: soon, but not "now", and said to be late
    assert pool.place(next_one).estimate == DEFAULT_SERVICE / 4
    assert pool.place(next_one).overdue
    pool.withdraw(holder)  # it ends; the next is served and the count starts again
    assert pool.place(next_one) is None
    assert pool.place(then).estimate == DEFAULT_SERVICE
    assert not pool.place(then).overdue


def test_the_estimate_counts_only_the_members_a_request_can_use_now():
    """A member cooling down is no free slot (it said "about 0 s" for the whole
    cooldown), nor is one a failover left out."""
    pool = AgentPool([Member("one", "a1", 1), Member("two", "a2", 1)],
                     clock=lambda: 100.0, wall=lambda: 1000.0)
    pool.enqueue(Ticket(owner="a"))  # "one" answers, just begun
    pool.cool_down("two", 20)  # the other is idle, asked to slow down for 20 s
    waiting = Ticket(owner="b")
    pool.enqueue(waiting)
    place = pool.place(waiting)
    assert (place.estimate, place.cooldown) == (DEFAULT_SERVICE, 0)  # "one" frees first
    pool.withdraw(waiting)
    failed_over = Ticket(owner="b")
    failed_over.exclude = frozenset({"one"})  # its first try failed there
    pool.enqueue(failed_over)
    place = pool.place(failed_over)
    assert (place.estimate, place.cooldown) == (20, 20)  # "two" only, after its cooldown


def test_a_timed_out_or_cancelled_lease_leaks_no_slot():
    pool = AgentPool(["agent"], max_concurrency=1, max_per_owner=1)

    async def main():
        async with pool.alease(owner="a"):
            waiter = asyncio.create_task(_borrow(pool, "b", 10))
            timed = asyncio.create_task(_borrow(pool, "c", 0.01))
            while pool.queued() < 2:
                await asyncio.sleep(0)
            waiter.cancel()
            results = await asyncio.gather(waiter, timed, return_exceptions=True)
        return results, await _borrow(pool, "a", 1)

    (cancelled, timed_out), last = asyncio.run(main())
    assert isinstance(cancelled, asyncio.CancelledError)
    assert "busy" in str(timed_out)
    assert last == "agent"
    assert pool.queued() == 0 and pool.members[0].in_flight == 0 and pool.held("a") == 0


async def _borrow(pool, owner, timeout):
    async with pool.alease(owner=owner, timeout=timeout) as lease:
        return lease.agent


def test_a_request_held_back_by_its_owners_cap_says_so():
    pool = AgentPool(["agent"], max_concurrency=8, max_per_owner=2)
    mine = [Ticket(owner="a") for _ in range(3)]
    for ticket in mine:
        pool.enqueue(ticket)
    place = pool.place(mine[2])
    assert place is not None and place.capped and place.position == 1
    pool.withdraw(mine[0])
    assert pool.place(mine[2]) is None  # served as soon as one of the two finished


def test_a_cooldown_counted_down_to_the_user_is_waited_out_past_the_queue_timeout():
    """The page says "continuing in N s": the request is served after the cooldown,
    not failed when the queue's timeout (here shorter) runs out meanwhile."""
    for use in (_lease_in_a_thread, _lease_in_a_loop):
        pool = AgentPool(["agent"], max_concurrency=1)
        pool.cool_down("pool:0", 0.3)
        # shorter than the cooldown, and long enough for a loaded machine to wake the
        # waiter once it ends (0.05 s failed once with four test workers on two cores)
        assert use(pool, timeout=0.2) == "agent"
        assert pool.queued() == 0 and pool.snapshot()[0]["in_flight"] == 0


def test_the_queue_timeout_counts_from_the_end_of_a_cooldown_however_late_one_asked():
    """Asked 2 s before the cooldown's end with a 5 s timeout, the request still has its
    5 s of queue after the countdown, as one that asked first has."""
    now = [100.0]
    pool = AgentPool(["agent"], max_concurrency=1, wall=lambda: now[0])
    pool.enqueue(Ticket(owner="holder"))  # the only slot is taken
    pool.cool_down("pool:0", 10)  # until 110
    late = Ticket(owner="late")
    pool.enqueue(late)
    now[0] = 112.0  # its own 5 s (asked at 108) ran out 2 s after the countdown ended
    assert pool._waited_out(late, timeout=5, since=108.0) == (False, 3.0)
    assert pool._waited_out(late, timeout=5, since=111.0) == (False, 0.0)  # no cooldown
    now[0] = 116.0
    assert pool._waited_out(late, timeout=5, since=108.0) == (False, 0.0)  # it is over


def test_a_cooldown_too_long_to_watch_is_said_at_once():
    import pytest

    from core.errors import describe_error
    from core.pool import PoolTimeout

    pool = AgentPool(["agent"], max_concurrency=1)
    pool.cool_down("pool:0", 300)
    for use in (_lease_in_a_thread, _lease_in_a_loop):  # not after the 30 s of waiting
        with pytest.raises(PoolTimeout, match="asked us to slow down for 5 min; try again") \
                as raised:
            use(pool, timeout=30)
    assert str(describe_error(raised.value)) == (
        "The model provider asked us to slow down for 5 min; try again then.")
    assert pool.queued() == 0 and pool.snapshot()[0]["state"] == "cooling down"


def _lease_in_a_thread(pool: AgentPool, timeout: float):
    with pool.lease(timeout=timeout) as lease:
        return lease.agent


def _lease_in_a_loop(pool: AgentPool, timeout: float):
    async def borrow():
        async with pool.alease(timeout=timeout) as lease:
            return lease.agent
    return asyncio.run(borrow())


def test_only_the_current_probe_lets_the_others_follow():
    pool = AgentPool(["agent"], max_concurrency=8)
    older, newer = Ticket(owner="a"), Ticket(owner="b")
    for ticket in (older, newer):
        pool.enqueue(ticket)
    pool.cool_down("pool:0", 0.0)  # a 429 that says "now": the next request probes
    assert pool.snapshot()[0]["state"] == "healthy"  # nothing is probing until then
    first_probe = Ticket(owner="c")
    pool.enqueue(first_probe)
    assert first_probe.probe
    assert pool.snapshot()[0]["state"] == "probing"
    pool.cool_down("pool:0", 0.0)  # an older request gets a 429 too: a new round
    second_probe = Ticket(owner="d")
    pool.enqueue(second_probe)
    assert second_probe.probe
    waiting = [Ticket(owner=f"w{i}") for i in range(3)]
    for ticket in waiting:
        pool.enqueue(ticket)
    pool.withdraw(first_probe)  # the stale probe ends: the others still wait ...
    assert all(t.index is None for t in waiting)
    pool.report_ok(pool._lease(second_probe, 0.0)[0], second_probe)  # ... for this one
    assert all(t.index is not None for t in waiting)
