"""The agent pool: least busy first, round-robin on ties, bounded concurrency and waits."""

import asyncio
import threading
import time

import pytest

from core.pool import AgentPool, PoolTimeout


def test_a_pool_of_one_lends_the_same_agent_every_time():
    agent = object()
    pool = AgentPool([agent])
    seen = set()
    for _ in range(5):
        with pool.lease() as lease:
            seen.add(id(lease.agent))
    assert seen == {id(agent)}


def test_sequential_requests_go_round_robin():
    pool = AgentPool(["a", "b", "c"])
    order = []
    for _ in range(6):
        with pool.lease() as lease:
            order.append(lease.agent)
    assert order == ["a", "b", "c", "a", "b", "c"]
    assert [a["served"] for a in pool.snapshot()] == [2, 2, 2]


def test_concurrent_requests_go_to_the_least_busy_agent():
    pool = AgentPool(["a", "b"], max_concurrency=4)
    with pool.lease() as first:
        assert first.agent == "a"
        with pool.lease() as second:
            assert second.agent == "b"
        # round-robin alone would pick "a" again; "b" is idle while "a" serves one
        with pool.lease() as third, pool.lease() as fourth:
            assert (third.agent, fourth.agent) == ("b", "a")  # then equals: in turn
            assert [a["in_flight"] for a in pool.snapshot()] == [2, 1]
    assert [a["in_flight"] for a in pool.snapshot()] == [0, 0]


def test_a_preferred_agent_wins_ties_only():
    pool = AgentPool(["a", "b"], max_concurrency=4)
    with pool.lease(prefer=1) as lease:
        assert lease.agent == "b"
        with pool.lease(prefer=1) as other:
            assert other.agent == "a"  # b is busier


def test_a_full_pool_times_out_with_a_clear_error():
    pool = AgentPool(["a"], max_concurrency=1)
    with pool.lease():
        with pytest.raises(PoolTimeout, match="the agent was busy"):
            with pool.lease(timeout=0.05):
                pass
    assert pool.timeouts == 1
    assert pool.queued() == 0
    with pool.lease(timeout=0.05) as lease:  # the slot was not leaked
        assert lease.agent == "a"


def test_waiters_are_served_in_arrival_order_when_a_slot_frees():
    pool = AgentPool(["a"], max_concurrency=1)
    order = []
    holder = pool.lease()
    holder.__enter__()

    def wait(i):
        with pool.lease(timeout=10):
            order.append(i)

    threads = []
    for i in range(5):
        thread = threading.Thread(target=wait, args=(i,))
        thread.start()
        threads.append(thread)
        while pool.queued() < i + 1:  # each is queued before the next starts
            time.sleep(0.001)
    holder.__exit__(None, None, None)
    for thread in threads:
        thread.join()
    assert order == [0, 1, 2, 3, 4]
    assert pool.snapshot()[0]["served"] == 6


def test_in_flight_never_exceeds_the_limit_under_load():
    pool = AgentPool(["a", "b"], max_concurrency=3)
    peak = [0]
    lock = threading.Lock()
    barrier = threading.Barrier(20)

    def work():
        barrier.wait()
        for _ in range(50):
            with pool.lease(timeout=10):
                with lock:
                    peak[0] = max(peak[0], sum(a["in_flight"] for a in pool.snapshot()))

    threads = [threading.Thread(target=work) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert peak[0] <= 6
    assert sum(a["served"] for a in pool.snapshot()) == 1000


def test_errors_are_counted_per_agent():
    pool = AgentPool(["a"])
    with pytest.raises(RuntimeError):
        with pool.lease():
            raise RuntimeError("provider down")
    assert pool.snapshot()[0]["errors"] == 1
    assert pool.snapshot()[0]["in_flight"] == 0


def test_asyncio_and_threads_share_one_queue():
    pool = AgentPool(["a"], max_concurrency=1)
    holder = pool.lease()
    holder.__enter__()

    async def main():
        task = asyncio.create_task(_aborrow(pool))
        while pool.queued() == 0:
            await asyncio.sleep(0)
        threading.Thread(target=holder.__exit__, args=(None, None, None)).start()
        return await task

    assert asyncio.run(main()) == "a"
    assert pool.snapshot()[0]["in_flight"] == 0


async def _aborrow(pool):
    async with pool.alease(timeout=10) as lease:
        return lease.agent


def test_a_cancelled_async_waiter_gives_its_place_back():
    pool = AgentPool(["a"], max_concurrency=1)

    async def main():
        async with pool.alease():
            task = asyncio.create_task(_aborrow(pool))
            while pool.queued() == 0:
                await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        assert pool.queued() == 0
        return await _aborrow(pool)

    assert asyncio.run(main()) == "a"
    assert pool.snapshot()[0]["in_flight"] == 0


def test_an_async_wait_times_out():
    pool = AgentPool(["a"], max_concurrency=1)

    async def main():
        async with pool.alease():
            with pytest.raises(PoolTimeout):
                async with pool.alease(timeout=0.05):
                    pass

    asyncio.run(main())
    assert pool.timeouts == 1 and pool.queued() == 0
