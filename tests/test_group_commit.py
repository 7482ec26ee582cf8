"""Group commit on SQLite: writes that queue up behind one share a transaction, each
undone alone if it fails; an event loop is never made to wait for the database."""

import asyncio
import sqlite3
import threading
import time

import pytest
from sqlalchemy import bindparam, insert, select
from sqlalchemy.exc import IntegrityError

from core.group_commit import GroupCommit
from core.schema import cooldowns
from core.store import SessionStore


class CountingWriter:
    """The store's writer, counting its transactions."""

    def __init__(self, writer):
        self.writer, self.transactions = writer, 0

    holds = property(lambda self: self.writer.holds)

    def as_raised(self, error):
        return self.writer.as_raised(error)

    def transaction(self, wait=True):
        self.transactions += 1
        return self.writer.transaction(wait)


@pytest.fixture
def store(sqlite_url):
    store = SessionStore(sqlite_url)
    yield store
    store.close()


@pytest.fixture
def writer(store):
    return CountingWriter(store._direct)


def put(store, quota):
    statement = store._direct.compile(
        insert(cooldowns).values(quota=bindparam("q"), until=bindparam("u")))
    return lambda execute: execute(statement, {"q": quota, "u": 1.0}) and quota


def stored(store):
    with store.engine.connect() as conn:
        return set(conn.execute(select(cooldowns.c.quota)).scalars())


def until(condition, timeout=5.0):
    """Wait for a state another thread reaches (bounded)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "never reached"
        time.sleep(0.001)


def behind_a_slow_write(store, commits):
    """A write that holds the database until released; returns (release, its thread)."""
    inside, release = threading.Event(), threading.Event()

    def slow(execute):
        put(store, "slow")(execute)
        inside.set()
        assert release.wait(5)

    leader = threading.Thread(target=commits.run, args=(slow,))
    leader.start()
    assert inside.wait(5)
    return release, leader


def queued_behind_a_slow_write(store, commits, writes):
    """Each of ``writes`` (name: work) queued on its own thread while a slow write holds
    the database; what each caller got (its value, or the exception raised)."""
    release, leader = behind_a_slow_write(store, commits)
    outcomes = {}

    def write(name, work):
        try:
            outcomes[name] = commits.run(work)
        except Exception as exc:  # noqa: BLE001 - what the caller gets
            outcomes[name] = exc

    threads = [threading.Thread(target=write, args=item) for item in writes.items()]
    for thread in threads:
        thread.start()
    until(lambda: len(commits._queued) == len(writes))
    release.set()
    for thread in [leader, *threads]:
        thread.join(5)
    return outcomes


def test_writes_queued_behind_one_are_stored_together_in_the_next_transaction(store, writer):
    outcomes = queued_behind_a_slow_write(store, GroupCommit(writer),
                                          {q: put(store, q) for q in ("a", "b", "c")})
    assert outcomes == {"a": "a", "b": "b", "c": "c"}
    assert stored(store) == {"slow", "a", "b", "c"}
    assert writer.transactions == 2  # the slow one's, then one for the three


def test_a_failing_write_in_a_batch_is_undone_alone_and_raised_to_its_caller(store, writer):
    def half_then_duplicate(execute):
        put(store, "half")(execute)
        put(store, "slow")(execute)  # the slow write's key: refused

    outcomes = queued_behind_a_slow_write(store, GroupCommit(writer), {
        "before": put(store, "before"), "bad": half_then_duplicate,
        "after": put(store, "after")})
    assert isinstance(outcomes["bad"], IntegrityError)  # as SQLAlchemy raises it
    assert outcomes["before"] == "before" and outcomes["after"] == "after"
    assert stored(store) == {"slow", "before", "after"}  # nothing of the bad one
    assert writer.transactions == 2


def test_a_lone_failing_write_raises_and_the_next_one_is_stored(store, writer):
    commits = GroupCommit(writer)

    def broken(execute):
        put(store, "never")(execute)
        raise ValueError("no")

    with pytest.raises(ValueError):
        commits.run(broken)
    assert commits.run(put(store, "next")) == "next"
    assert stored(store) == {"next"}


def test_an_event_loop_stores_the_writes_of_one_pass_together_on_its_own_thread(
        store, writer):
    commits = GroupCommit(writer)
    told = []

    async def submit():
        for quota in ("a", "b", "c"):
            commits.submit(put(store, quota), lambda value, error: told.append(
                (value, error, threading.get_ident())))
        assert told == []  # the loop goes on; its writes wait for the end of the pass
        await asyncio.sleep(0)  # the loop runs what it had ready: the pass ends
        return list(told)

    here = threading.get_ident()
    assert asyncio.run(submit()) == [("a", None, here), ("b", None, here), ("c", None, here)]
    assert stored(store) == {"a", "b", "c"}
    assert writer.transactions == 1  # no thread hop, one transaction


def test_an_event_loop_awaits_its_write_and_gets_its_own_outcome(store, writer):
    commits = GroupCommit(writer)

    async def writes():
        return await asyncio.gather(commits.write(put(store, "a")),
                                    commits.write(put(store, "a")),  # the same key again
                                    commits.write(put(store, "b")), return_exceptions=True)

    first, again, other = asyncio.run(writes())
    assert (first, other) == ("a", "b") and isinstance(again, IntegrityError)
    assert stored(store) == {"a", "b"} and writer.transactions == 1


def test_an_event_loop_queues_its_write_behind_a_thread_writing_and_goes_on(store, writer):
    commits = GroupCommit(writer)
    release, leader = behind_a_slow_write(store, commits)

    async def submit():
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        commits.submit(put(store, "queued"), lambda value, error: done.set_result(
            (value, error, threading.get_ident())))
        assert not done.done()  # returned at once, not written yet
        release.set()
        await asyncio.to_thread(leader.join, 5)
        return await asyncio.wait_for(done, 5), threading.get_ident()

    (value, error, writer_thread), loop_thread = asyncio.run(submit())
    assert (value, error) == ("queued", None)
    assert writer_thread == loop_thread  # the loop led it once the thread stepped down
    assert stored(store) == {"slow", "queued"}
    assert writer.transactions == 2


def test_a_leader_stores_one_batch_and_steps_down(store, writer):
    """Under steady load no caller writes for everybody else: its own reply would wait
    (and its run, never marked alive, would look abandoned)."""
    commits = GroupCommit(writer)
    release, leader = behind_a_slow_write(store, commits)
    written_by = []

    def next_write(execute):
        written_by.append(threading.get_ident())
        return put(store, "next")(execute)

    queued = threading.Thread(target=commits.run, args=(next_write,))
    queued.start()
    until(lambda: len(commits._queued) == 1)
    release.set()
    leader.join(5)
    queued.join(5)
    assert written_by == [queued.ident]  # it led its own batch: the leader had returned
    assert stored(store) == {"slow", "next"} and writer.transactions == 2


def test_an_event_loop_never_waits_for_another_process_writing(store, writer, sqlite_url):
    commits = GroupCommit(writer)
    other = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another replica's write on the same file

    async def submit():
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        commits.submit(put(store, "later"), lambda value, error: loop.call_soon_threadsafe(
            done.set_result, (value, error, threading.get_ident())))
        await asyncio.sleep(0)  # the loop's pass ends: it tries, finds the database busy
        assert not done.done()  # and goes on, a thread of its pool waiting its turn
        other.execute("COMMIT")
        return await asyncio.wait_for(done, 10)

    value, error, thread = asyncio.run(submit())
    assert (value, error) == ("later", None) and thread != threading.get_ident()
    assert stored(store) == {"later"}
    assert commits.run(put(store, "again")) == "again"  # nobody is left leading


def test_a_thread_writing_waits_for_another_process_writing(store, writer, sqlite_url):
    """The held connection does not wait on its own (the event loop's writes must not);
    a thread's write raises its busy timeout and waits its turn instead of failing."""
    commits = GroupCommit(writer)
    assert commits.run(put(store, "first")) == "first"  # the connection is held now
    other = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None,
                            check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # another replica's write on the same file
    ends = threading.Timer(0.3, other.execute, ["COMMIT"])
    ends.start()
    try:
        assert commits.run(put(store, "second")) == "second"
    finally:
        ends.join()
    assert stored(store) == {"first", "second"}
