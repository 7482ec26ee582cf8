"""Turns sent from an event loop (``asend``, ``astream``) start on the run worker's loop:
their writes go with the loop's others, and nothing they wait for stalls the replies
already streaming there."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from sqlalchemy import select

from core.errors import MessageRejected
from core.schema import runs
from core.store import COMPLETE, RUNNING, STOPPED
from core.turns import Token
from tests.fakes import ScriptedModel, first_words, scripted_factory


def stored(manager, session):
    return [(m.type, m.text, status)
            for m, status in manager.store.load_messages_with_status(session.session_id)]


def tokens_after(run, seen: int, more: int) -> int:
    """Wait (bounded) until ``more`` tokens have streamed after the first ``seen``."""
    count = seen
    while count < seen + more:
        events, done = run.read(count, timeout=5)
        assert events or not done, "the run ended"
        assert events, "no token for 5 s: the worker's loop is stalled"
        count += sum(isinstance(e, Token) for e in events)
    return count


def test_an_async_message_while_a_reply_runs_is_refused_and_nothing_stored(make_manager):
    model = ScriptedModel()
    manager = make_manager(agent_factory=scripted_factory(model))
    model.enqueue("a long answer", pause_after=1)
    session = manager.create_session()
    run = session.start("first")
    tokens_after(run, 0, 1)
    with pytest.raises(MessageRejected, match="still being written"):
        asyncio.run(session.asend("second"))
    assert stored(manager, session) == [("human", "first", COMPLETE), ("ai", "", RUNNING)]
    session.stop()


def test_an_async_turn_reads_the_history_again_when_another_writer_came_between(
        make_manager):
    model = ScriptedModel(answer=first_words)
    manager = make_manager(agent_factory=scripted_factory(model))
    session = manager.create_session()

    async def chat():
        assert await session.asend("I am Ada.") == "I am Ada. (1)"
        manager.store.append_messages(  # another replica, unknown to this one's cache
            session.session_id, [HumanMessage("I am Bob."), AIMessage("Hello Bob.")])
        return await session.asend("Who am I?")

    assert asyncio.run(chat()) == "I am Ada. (3)"
    assert [m.text for m in session.messages] == [
        "I am Ada.", "I am Ada. (1)", "I am Bob.", "Hello Bob.", "Who am I?",
        "I am Ada. (3)"]


def test_an_async_turn_in_a_chat_deleted_under_another_replica_carries_on(make_manager):
    here, there = make_manager(), make_manager()
    session = here.create_session()
    session.send("My name is Ada.")
    there.store.delete_session(session.session_id)  # retention ran on another replica
    assert asyncio.run(session.asend("what is 2+2")) == "2+2 = 4"
    texts = [m.text for m in session.messages]  # the new chat: the question, the tool
    assert (texts[0], texts[-1]) == ("what is 2+2", "2+2 = 4")  # step, the answer


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_an_async_start_waits_for_another_process_while_replies_stream_on(make_manager,
                                                                           db_url):
    model = ScriptedModel(delay=0.01)
    manager = make_manager(agent_factory=scripted_factory(model))
    model.enqueue(" ".join(f"w{i}" for i in range(300)))
    streaming, waiting = manager.create_session(), manager.create_session()
    run = streaming.start("tell me a story")
    seen = tokens_after(run, 0, 1)
    other = sqlite3.connect(db_url.removeprefix("sqlite:///"), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another replica writing to the same file

    async def meanwhile():
        sent = asyncio.create_task(waiting.asend("hello"))
        await asyncio.to_thread(tokens_after, run, seen, 20)  # the story goes on
        assert not sent.done()  # while the new turn waits for the database
        assert manager.store.count_messages(waiting.session_id) == 0
        other.execute("COMMIT")
        return await asyncio.wait_for(sent, 10)

    try:
        assert asyncio.run(meanwhile()) == "ok"
    finally:
        other.close()
    assert stored(manager, waiting) == [("human", "hello", COMPLETE), ("ai", "ok", COMPLETE)]
    streaming.stop()


def until(condition, timeout=10.0):
    """Wait (bounded) for a state another thread reaches."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_an_asend_given_up_while_its_start_is_stored_is_a_stop_not_a_stuck_run(
        make_manager, db_url):
    manager = make_manager()
    session = manager.create_session()
    commits = manager.store.runs._commits
    other = sqlite3.connect(db_url.removeprefix("sqlite:///"), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # the start cannot be stored yet

    async def give_up():
        sent = asyncio.create_task(session.asend("hello"))
        await asyncio.to_thread(until, lambda: commits._leading)  # a thread waits to lead
        sent.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sent

    try:
        asyncio.run(give_up())
    finally:
        other.execute("COMMIT")
        other.close()
    until(lambda: not commits._leading)  # the start is stored now
    until(lambda: manager.store.runs.running_run(session.session_id) is None
          and manager.chat.active_run(session.session_id) is None)
    assert stored(manager, session) == [("human", "hello", COMPLETE)]  # kept, never lost
    with manager.store.engine.connect() as conn:
        assert conn.execute(select(runs.c.status)).scalars().all() == [STOPPED]
    assert session.send("what is 2+2") == "2+2 = 4"  # the chat is not stuck


def test_an_asend_given_up_mid_reply_stops_the_reply_and_keeps_what_was_written(
        make_manager):
    model = ScriptedModel().enqueue("Once upon a time", pause_after=2, pause=60)
    manager = make_manager(agent_factory=scripted_factory(model))
    session = manager.create_session()

    async def give_up():
        sent = asyncio.create_task(session.asend("tell me a story"))
        await asyncio.to_thread(until, lambda: (run := manager.chat.active_run(
            session.session_id)) is not None and run.text == "Once upon ")
        sent.cancel()  # then the model stalls: only the cancel can end the reply
        with pytest.raises(asyncio.CancelledError):
            await sent

    asyncio.run(give_up())
    until(lambda: manager.chat.active_run(session.session_id) is None)
    assert stored(manager, session) == [("human", "tell me a story", COMPLETE),
                                        ("ai", "Once upon ", STOPPED)]
    assert session.send("hello") == "ok"  # the chat is not stuck


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_start_from_any_thread_is_written_on_the_worker_loop(make_manager, db_url,
                                                                monkeypatch):
    """Threads (Streamlit's script runs) start turns the same way: one hand-off to the
    worker's loop, whose pass writes them together, no thread of theirs at the database."""
    manager = make_manager()
    runs, written_on = manager.store.runs, []
    original = runs._start

    def spied(*args):
        work = original(*args)

        def recorded(execute):
            written_on.append(threading.get_ident())
            return work(execute)
        return recorded

    monkeypatch.setattr(runs, "_start", spied)
    session = manager.create_session()
    assert session.send("what is 2+2") == "2+2 = 4"
    run = session.start("what is 3+3")
    assert run.wait(10) and run.reply == "3+3 = 6"
    assert written_on == [manager.worker._thread.ident] * 2
