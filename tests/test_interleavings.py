"""A run's actions during one another, each interleaving forced with events and loop
callbacks: a second Stop while the end is stored, a Stop while the end waits for a busy
database, a chat deleted while a message to it is being stored, a version switch while
a message is being sent, a chat's settings changed through another record of it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor

import pytest

import core.chat
from core import ChatbotSessionManager
from core.agents import AgentSpec
from core.chat import ChatEngine
from core.errors import MessageRejected
from core.offline_model import OFFLINE_MODEL_NAME
from core.store import COMPLETE, STOPPED
from tests.fakes import ScriptedModel, scripted_factory


def on_loop(manager: ChatbotSessionManager, coroutine, timeout: float = 10):
    return asyncio.run_coroutine_threadsafe(coroutine, manager.chat.worker.loop
                                            ).result(timeout)


def task_over(manager: ChatbotSessionManager, run) -> None:
    """Until the run's task has ended (on the worker's loop: a task, or a future)."""
    if run.task is not None:
        on_loop(manager, asyncio.wait([run.task]))
    else:
        run.future.exception(10)


@pytest.fixture
def sqlite_manager(sqlite_url) -> Iterator[ChatbotSessionManager]:
    """SQLite: a turn's end is written by the event loop itself unless another writer
    holds the database (then by a thread)."""
    go_on = threading.Event()
    model = ScriptedModel().enqueue("Hello there", pause_after=1, pause=go_on)
    manager = ChatbotSessionManager(scripted_factory(model), DATABASE_URL=sqlite_url)
    manager.go_on = go_on  # type: ignore[attr-defined]
    yield manager
    manager.close()


def test_a_second_stop_while_a_stopped_run_stores_its_tool_step_still_ends_the_run(
        make_manager, monkeypatch):
    """Stop arrives while a tool step is being written; the run's end waits for that
    write, and a second Stop (a second click, another tab, a replica's stop asked again
    at the next checkpoint) arrives meanwhile: the run still ends, stored, and the chat
    takes its next message."""
    manager = make_manager()  # the offline model answers arithmetic with a tool call
    engine = manager.chat
    writing, release, finishing = threading.Event(), threading.Event(), threading.Event()
    advance = manager.store.runs.advance_reply

    def slow_advance(*args, **kwargs):
        writing.set()
        release.wait(10)
        return advance(*args, **kwargs)

    finish = ChatEngine._finish

    async def finish_stopped_again(self, session, progress, *args):
        # runs while _finish waits for the step's write: its first await
        asyncio.get_running_loop().call_soon(self._cancel, progress.run.id)
        finishing.set()
        return await finish(self, session, progress, *args)

    monkeypatch.setattr(manager.store.runs, "advance_reply", slow_advance)
    monkeypatch.setattr(ChatEngine, "_finish", finish_stopped_again)
    session = manager.create_session()
    run = session.start("What is 12*7?")
    assert writing.wait(10)
    engine.worker.loop.call_soon_threadsafe(engine._cancel, run.id)  # the first Stop
    assert finishing.wait(10)
    release.set()
    task_over(manager, run)

    assert run.finished and run.status == STOPPED
    assert manager.store.runs.running_run(session.session_id) is None
    assert engine.active_run(session.session_id) is None
    assert run.id not in engine._progress  # no longer kept alive by the checkpoints
    assert session.start("And 2+2?").wait(10)


def test_a_stop_while_the_end_waits_for_a_busy_database_does_not_fail_a_complete_reply(
        sqlite_manager, monkeypatch):
    """The reply is complete; its end waits for another writer (a thread then stores
    it); a Stop arrives meanwhile. The run's task ends only once the run has: the
    sender gets the reply, not "interrupted"."""
    manager = sqlite_manager
    engine = manager.chat
    submitted = threading.Event()
    later = manager.store.runs.finish_turn_later

    def finish_later(*args, **kwargs):
        later(*args, **kwargs)
        submitted.set()

    monkeypatch.setattr(manager.store.runs, "finish_turn_later", finish_later)
    session = manager.create_session()
    with ThreadPoolExecutor(1) as pool:
        sending = pool.submit(session.send, "hi")
        run = None
        while run is None or not run.answered:  # the first word is out
            run = engine.active_run(session.session_id)
            on_loop(manager, asyncio.sleep(0))
        lock = manager.store._write_lock
        lock.acquire()  # another writer: the loop cannot store the end itself
        try:
            manager.go_on.set()
            assert submitted.wait(10)
            engine.worker.loop.call_soon_threadsafe(engine._cancel, run.id)  # Stop
            for _ in range(3):  # loop passes: the stop is delivered, the task goes on
                on_loop(manager, asyncio.sleep(0))
            assert not run.task.done() and not run.finished
        finally:
            lock.release()
        assert sending.result(10) == "Hello there"
    assert run.status == COMPLETE


def test_a_chat_deleted_while_a_message_to_it_is_being_stored_stays_deleted(
        make_manager, monkeypatch):
    """Tab B's message is being stored when tab A deletes the chat: the delete waits
    for that start, then stops its run; the chat and all of it are gone."""
    held = threading.Event()  # set at the end: the model's thread is let go
    model = ScriptedModel().enqueue("ok").enqueue("A long answer", pause_after=1,
                                                  pause=held)
    manager = make_manager(agent_factory=scripted_factory(model))
    session = manager.create_session()
    assert session.send("first") == "ok"
    sid = session.session_id
    storing, release = _hold_starts(manager, monkeypatch)
    waiting = threading.Event()

    class Observed(threading.Condition):
        def wait_for(self, *args, **kwargs):
            waiting.set()
            return super().wait_for(*args, **kwargs)

    manager.chat._launch_left = Observed(manager.chat._lock)
    with ThreadPoolExecutor(2) as pool, _setting(held):
        sending = pool.submit(session.start, "second")
        assert storing.wait(10)
        deleting = pool.submit(manager.delete_session, sid)  # tab A
        assert waiting.wait(10)  # the delete waits for the start being stored
        assert not deleting.done()
        release.set()
        assert deleting.result(10)
        run = sending.result(10)
    assert run.wait(10) and run.status == STOPPED
    assert manager.store.get_session(sid) is None
    assert manager.store.load_messages(sid) == []
    with pytest.raises(MessageRejected, match="deleted"):
        session.start("third")


def test_a_message_stored_after_its_chat_was_deleted_does_not_bring_it_back(
        make_manager, monkeypatch):
    """A start whose write comes after the delete (the delete gave up waiting for it):
    the chat's row is gone, which is not taken for an old chat removed by retention
    (that one is made again): the message is refused, the chat stays deleted."""
    monkeypatch.setattr(core.chat, "STOP_WAIT", 0.05)
    manager = make_manager(agent_factory=scripted_factory(ScriptedModel()))
    session = manager.create_session()
    assert session.send("first") == "ok"
    sid = session.session_id
    storing, release = _hold_starts(manager, monkeypatch)
    with ThreadPoolExecutor(1) as pool:
        sending = pool.submit(session.start, "second")
        assert storing.wait(10)
        assert manager.delete_session(sid)
        release.set()
        with pytest.raises(MessageRejected, match="chat was deleted"):
            sending.result(10)
    assert manager.store.get_session(sid) is None
    assert manager.store.load_messages(sid) == []


def test_a_version_switch_while_a_message_is_sent_leaves_the_message_in_sight(
        make_manager, monkeypatch):
    """Tab A clicks "‹" (an older version) and finds no reply being written; tab B's
    message is stored and its reply starts before the switch is written. The switch
    is refused (a reply is being written), so B's message and its reply stay shown.
    (B's reply is written slowly: at full speed it had once ended, on PostgreSQL under
    a loaded CI, before A's switch was written, and the switch was then rightly taken.)"""
    manager = make_manager(OFFLINE_STREAM_DELAY=0.2)
    session = manager.create_session(owner="ada")
    assert session.start("what is 2+2").wait(30)
    older = manager.store.load_rows(session.session_id)[0][0]
    assert session.edit(older, "what is 3+3").wait(30)
    sid = session.session_id
    running_run = manager.store.runs.running_run
    sent = {}

    def checked_then_tab_b_sends(session_id):
        found = running_run(session_id)  # tab A's check: nothing running yet
        if not sent:
            shown = manager.store.load_rows(sid)
            sent["run"] = session.start("what is 5*5", shown_last=shown[-1][0])
        return found

    monkeypatch.setattr(manager.store.runs, "running_run", checked_then_tab_b_sends)
    assert not manager.choose_branch(session, older)  # tab A's click: refused
    monkeypatch.undo()
    assert sent["run"].wait(30)
    shown = [m.text for _, m, _ in manager.store.load_rows(sid)]
    assert "what is 5*5" in shown and shown[-1] == "5*5 = 25"


def test_settings_changed_on_another_replica_answer_the_next_message_here(make_manager):
    """Tab B (replica 2) gives the chat its own agent; tab A's record (replica 1) still
    says "shared pool": its next message is answered, and tagged, as the chat now is."""
    one, two = make_manager(), make_manager()
    session_a = one.create_session(owner="ada")
    assert session_a.start("what is 2+2").wait(10)
    sid = session_a.session_id
    two.get_session(sid, owner="ada").agent = AgentSpec(OFFLINE_MODEL_NAME, "Be a pirate.",
                                                        0.0)
    run = session_a.start("what is 3+3")
    assert run.wait(10) and run.agent.startswith("custom:")
    last = one.store.load_stored(sid)[-1]
    assert session_a.has_custom_agent and last.custom_agent


def test_settings_changed_through_a_second_record_of_an_evicted_chat_are_followed(
        make_manager):
    """One replica: tab A holds its record of the chat; the chat is evicted from memory,
    tab B opens it (a new record) and goes back to the shared pool. Tab A follows."""
    manager = make_manager()
    session_a = manager.create_session(owner="ada")
    session_a.agent = AgentSpec(OFFLINE_MODEL_NAME, "Be a pirate.", 0.0)
    assert session_a.start("what is 2+2").wait(10)
    sid = session_a.session_id
    manager.evict_idle(now=manager._clock() + manager.settings.SESSION_IDLE_TTL + 1)
    session_b = manager.get_session(sid, owner="ada")
    assert session_b is not session_a
    session_b.agent = None
    run = session_a.start("what is 3+3")
    assert run.wait(10) and run.agent.startswith("pool:")
    assert not session_a.has_custom_agent
    assert not manager.store.load_stored(sid)[-1].custom_agent


def test_settings_changed_while_a_pool_reply_runs_leave_the_reply_the_pools(make_manager,
                                                                            monkeypatch):
    """The user gives the chat its own agent while a shared-pool reply with a tool step
    is written: the pool goes on answering, and every row of that reply (the tool step
    and the answer) is the pool's, counted once, as shared."""
    manager = make_manager()
    session = manager.create_session(owner="ada")
    serve = manager.serve

    async def settings_changed_as_it_answers(session_, attempt, **kwargs):
        async def attempt_after_change(answerer, lease, answered):
            session_.agent = AgentSpec(OFFLINE_MODEL_NAME, "Be a pirate.", 0.0)
            await attempt(answerer, lease, answered)
        await serve(session_, attempt_after_change, **kwargs)

    monkeypatch.setattr(manager, "serve", settings_changed_as_it_answers)
    run = session.start("what is 2+2")  # the offline model calls its calculator
    assert run.wait(10) and run.agent.startswith("pool:")
    rows = [r for r in manager.store.load_stored(session.session_id)
            if r.message.type == "ai"]
    assert len(rows) == 2 and [r.custom_agent for r in rows] == [False, False]
    assert [u["messages"] for u in manager.store.usage_by_agent()] == [1]


def _hold_starts(manager: ChatbotSessionManager, monkeypatch
                 ) -> tuple[threading.Event, threading.Event]:
    """Each start's write waits until ``release`` is set; ``storing`` says one is."""
    storing, release = threading.Event(), threading.Event()
    start_turn = manager.store.runs.start_turn

    def held_start(*args, **kwargs):
        storing.set()
        release.wait(10)
        return start_turn(*args, **kwargs)

    async def held_in_a_thread(*args, **kwargs):
        return await asyncio.to_thread(held_start, *args, **kwargs)

    monkeypatch.setattr(manager.store.runs, "start_turn", held_start)
    monkeypatch.setattr(manager.store.runs, "astart_turn", held_in_a_thread)
    return storing, release


@contextmanager
def _setting(event: threading.Event) -> Iterator[None]:
    try:
        yield
    finally:
        event.set()
