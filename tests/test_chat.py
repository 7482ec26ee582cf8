"""Runs: a reply is owned by core, not by whoever reads it.

A run starts when a message is accepted and goes on whatever its readers do; any number
of readers attach at any point; Stop is explicit and fast; the reply's progress is in the
database from the start, so another process (a replica, or the next process after a
crash) sees it; and a conversation has one run at a time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from langchain_core.messages import AIMessage, HumanMessage

from core import ChatbotSessionManager
from core.chat import SHUT_DOWN
from core.errors import ChatError, MessageRejected
from core.runs import CHECKPOINT_EVERY
from core.store import COMPLETE, INTERRUPTED, RUNNING, STOPPED
from core.turns import Token
from tests.fakes import ScriptedModel, scripted_factory
from tests.servers import ROOT

STORY = " ".join(f"w{i}" for i in range(1, 41))


@pytest.fixture
def scripted(make_manager):
    """A manager whose agents answer from a script, and the script."""
    model = ScriptedModel()
    return make_manager(agent_factory=scripted_factory(model)), model


def first_tokens(run, count: int) -> list[str]:
    """Read until ``count`` tokens have streamed."""
    seen: list[str] = []
    for event in run.follow():
        if isinstance(event, Token):
            seen.append(event.text)
            if len(seen) == count:
                return seen
    raise AssertionError(f"the run ended after {seen}")


def stored(manager, session) -> list[tuple[str, str, str]]:
    return [(m.type, m.text, status)
            for m, status in manager.store.load_messages_with_status(session.session_id)]


def all_texts(manager, session) -> list[str]:
    """Every message of the chat stored, shown or not."""
    from sqlalchemy import select

    from core.schema import messages
    with manager.store.engine.connect() as conn:
        return list(conn.execute(select(messages.c.content).where(
            messages.c.session_id == session.session_id)).scalars())


class TestLifecycle:
    def test_a_run_completes_and_stores_its_reply_once(self, scripted):
        manager, model = scripted
        model.enqueue("Hello there")
        session = manager.create_session()
        run = session.start("hi")
        assert run.wait(10)
        assert (run.status, run.reply) == (COMPLETE, "Hello there")
        assert stored(manager, session) == [("human", "hi", COMPLETE),
                                            ("ai", "Hello there", COMPLETE)]
        assert manager.store.runs.latest_run(session.session_id)["status"] == COMPLETE

    def test_the_reply_row_is_running_and_checkpointed_while_it_streams(self, scripted):
        manager, model = scripted
        model.enqueue(STORY, pause_after=5)
        session = manager.create_session()
        run = session.start("tell me")
        first_tokens(run, 5)
        deadline = time.monotonic() + 10 * CHECKPOINT_EVERY
        while stored(manager, session)[-1][1] != "w1 w2 w3 w4 w5 ":
            assert time.monotonic() < deadline, stored(manager, session)
            run.wait(0.1)  # the next checkpoint is due within a second
        assert stored(manager, session)[-1][2] == RUNNING
        session.stop()

    def test_leaving_a_stream_early_leaves_the_run_going(self, scripted):
        manager, model = scripted
        model.enqueue(STORY, pause_after=1, pause=3)  # still going once the reader left
        session = manager.create_session()
        stream = session.stream("tell me")
        next(stream)
        stream.close()  # a reload, a closed tab: the reader goes, the reply does not
        run = manager.chat.active_run(session.session_id)
        assert run is not None and run.wait(10)
        assert stored(manager, session)[-1] == ("ai", STORY, COMPLETE)

    def test_two_readers_see_the_same_events_and_a_late_one_sees_them_all(self, scripted):
        manager, model = scripted
        model.delay = 0.005
        model.enqueue(STORY)
        run = manager.create_session().start("tell me")
        early = list(run.follow())
        late = list(run.follow())  # attaches after the end: still everything, in order
        assert early == late
        assert "".join(e.text for e in early) == STORY

    def test_a_provider_failure_ends_the_run_interrupted_with_a_clear_error(self, scripted):
        import httpx
        import openai

        manager, model = scripted
        request = httpx.Request("POST", "http://127.0.0.1/v1/chat/completions")
        down = openai.APIConnectionError(request=request)
        model.fail(down).fail(down)  # tried once more (one member: on the same one)
        session = manager.create_session()
        run = session.start("hi")
        assert run.wait(10)
        assert run.status == INTERRUPTED and "Could not reach" in run.error
        assert stored(manager, session) == [("human", "hi", COMPLETE)]
        assert manager.store.runs.latest_run(session.session_id)["error"] == run.error
        assert manager.get_stats()["pool"][0]["errors"] == 2


class TestStop:
    def test_stop_cancels_the_provider_call_and_stores_exactly_what_streamed(self, scripted):
        manager, model = scripted
        model.enqueue(STORY, pause_after=3, pause=60)  # the provider then hangs a minute
        session = manager.create_session()
        run = session.start("tell me")
        shown = first_tokens(run, 3)
        assert session.stop()  # returns once the partial is stored
        assert run.finished and run.status == STOPPED
        assert stored(manager, session)[-1] == ("ai", "".join(shown), STOPPED)
        assert manager.store.runs.latest_run(session.session_id)["status"] == STOPPED
        usage = manager.get_stats()["pool"][0]
        assert (usage["in_flight"], usage["stopped"], usage["errors"]) == (0, 1, 0)

    def test_a_shutdown_mid_reply_stores_it_interrupted_to_be_retried(self, scripted,
                                                                    make_manager):
        """A redeploy's SIGTERM closes the manager (app.py's lifespan): a reply being
        written is stored up to its last word and ended as interrupted by the restart,
        which the user can retry; nobody stopped it."""
        manager, model = scripted
        model.enqueue(STORY, pause_after=3, pause=60)
        session = manager.create_session()
        run = session.start("tell me")
        shown = first_tokens(run, 3)
        manager.close()
        assert (run.status, run.error, run.retryable) == (INTERRUPTED, SHUT_DOWN, True)
        later = make_manager(agent_factory=scripted_factory(model))  # the next process
        assert stored(later, session)[-1] == ("ai", "".join(shown), INTERRUPTED)
        latest = later.store.runs.latest_run(session.session_id)
        assert (latest["status"], latest["error"]) == (INTERRUPTED, SHUT_DOWN)

    def test_a_stop_by_run_id_is_taken_only_from_the_browser_whose_chat_it_is(
            self, scripted):
        """The page's Stop request names a run: another browser, an unknown or malformed
        id stop nothing."""
        manager, model = scripted
        model.enqueue(STORY, pause_after=2, pause=60)
        session = manager.create_session(owner="browser-a" * 3)
        run = session.start("tell me")
        first_tokens(run, 2)
        assert not manager.stop_run(run.id, owner="browser-b" * 3)
        assert not manager.stop_run("x" * 24, owner="browser-a" * 3)
        assert not manager.stop_run("../" + run.id, owner="browser-a" * 3)
        assert not run.finished
        assert manager.stop_run(run.id, owner="browser-a" * 3)
        assert run.wait(10) and run.status == STOPPED

        model.enqueue(STORY, pause_after=2, pause=60)
        ownerless = manager.create_session()  # made in code, no browser's
        run = ownerless.start("tell me")
        first_tokens(run, 2)
        assert not manager.stop_run(run.id, owner="browser-a" * 3)
        ownerless.stop()

    def test_the_next_message_starts_at_once_after_a_stop(self, scripted):
        manager, model = scripted
        model.enqueue(STORY, pause_after=2, pause=60).enqueue("Second answer")
        session = manager.create_session()
        first_tokens(session.start("one"), 2)
        session.stop()
        assert session.send("two") == "Second answer"
        assert [t for t, _, _ in stored(manager, session)] == ["human", "ai", "human", "ai"]

    def test_a_stop_before_the_first_word_leaves_no_empty_reply(self, scripted):
        manager, model = scripted
        model.enqueue(STORY, pause_after=0, pause=60)
        session = manager.create_session()
        run = session.start("hi")
        session.stop()
        assert run.status == STOPPED
        assert stored(manager, session) == [("human", "hi", COMPLETE)]
        assert manager.store.runs.latest_run(session.session_id)["status"] == STOPPED

    def test_regenerate_after_a_stop_replaces_the_partial(self, scripted):
        manager, model = scripted
        model.enqueue(STORY, pause_after=2, pause=60).enqueue("A full answer")
        session = manager.create_session()
        first_tokens(session.start("one"), 2)
        session.stop()
        assert "".join(e.text for e in session.regenerate()) == "A full answer"
        assert stored(manager, session) == [("human", "one", COMPLETE),
                                            ("ai", "A full answer", COMPLETE)]

    def test_a_regenerate_can_be_stopped_too_and_what_it_wrote_replaces_the_answer(
            self, scripted):
        manager, model = scripted
        model.enqueue("First answer").enqueue(STORY, pause_after=2, pause=60)
        session = manager.create_session()
        session.send("one")
        run = manager.chat.regenerate(session)
        first_tokens(run, 2)
        assert [(kind, status) for kind, _, status in stored(manager, session)] == [
            ("human", COMPLETE), ("ai", RUNNING)]  # shown: the new reply, not the old too
        assert "First answer" in all_texts(manager, session)  # still kept meanwhile
        session.stop()
        assert stored(manager, session) == [("human", "one", COMPLETE),
                                            ("ai", "w1 w2 ", STOPPED)]

    def test_a_regenerate_stopped_before_its_first_word_keeps_the_answer_it_replaced(
            self, scripted):
        """Stopped while it waited (for an agent, or the model's first word): the chat is
        left as it was, not without an answer."""
        manager, model = scripted
        model.enqueue("First answer").enqueue(STORY, pause_after=0, pause=60)
        session = manager.create_session()
        session.send("one")
        before = stored(manager, session)
        run = manager.chat.regenerate(session)
        session.stop()
        assert run.status == STOPPED
        assert stored(manager, session) == before == [("human", "one", COMPLETE),
                                                      ("ai", "First answer", COMPLETE)]
        assert manager.store.runs.latest_run(session.session_id)["status"] == STOPPED
        model.script.clear()  # (stopped before or after the model took its reply)
        reply = session.send("two")  # and the chat goes on below it
        assert [text for _, text, _ in stored(manager, session)] == [
            "one", "First answer", "two", reply]

    def test_a_regenerate_that_fails_before_its_first_word_keeps_the_answer_too(
            self, scripted):
        manager, model = scripted
        model.enqueue("First answer").fail(RuntimeError("provider down"))
        session = manager.create_session()
        session.send("one")
        run = manager.chat.regenerate(session)
        assert run.wait(10) and run.status == INTERRUPTED and run.error
        assert stored(manager, session) == [("human", "one", COMPLETE),
                                            ("ai", "First answer", COMPLETE)]


class TestOneRunPerConversation:
    def test_a_message_sent_while_a_reply_is_written_is_refused_and_not_stored(
            self, scripted):
        manager, model = scripted
        model.enqueue(STORY, pause_after=1, pause=60)
        session = manager.create_session()
        first_tokens(session.start("one"), 1)
        with pytest.raises(MessageRejected, match="still being written"):
            session.send("two")
        with pytest.raises(MessageRejected, match="still being written"):
            manager.chat.regenerate(session)
        shown = manager.store.load_stored(session.session_id)[0].id  # a page's old button
        with pytest.raises(MessageRejected, match="still being written"):
            manager.chat.regenerate(session, shown_last=shown)
        session.stop()
        assert [text for kind, text, _ in stored(manager, session) if kind == "human"] == [
            "one"]

    def test_another_process_cannot_start_a_second_run_either(self, scripted, db_url):
        manager, model = scripted
        model.enqueue(STORY, pause_after=1, pause=60)
        session = manager.create_session()
        first_tokens(session.start("one"), 1)
        other = ChatbotSessionManager(DATABASE_URL=db_url)
        try:
            with pytest.raises(MessageRejected, match="still being written"):
                other.get_session(session.session_id).send("two")
            with pytest.raises(MessageRejected, match="still being written"):  # not "changed"
                other.chat.regenerate(other.get_session(session.session_id), shown_last=1)
        finally:
            other.close()
            session.stop()


    def test_a_regenerate_from_a_page_that_missed_a_turn_is_refused(self, scripted):
        manager, model = scripted
        session = manager.create_session()
        session.send("first")
        shown_last = manager.store.load_stored(session.session_id)[-1].id  # a tab shows this
        session.send("second")  # ... while another tab asks and gets an answer
        before = stored(manager, session)
        with pytest.raises(MessageRejected, match="changed in another tab"):
            manager.chat.regenerate(session, shown_last=shown_last)
        assert stored(manager, session) == before  # the answer it never showed is kept
        latest = manager.store.load_stored(session.session_id)[-1].id
        run = manager.chat.regenerate(session, shown_last=latest)  # the page caught up
        assert run.wait(10) and run.status == COMPLETE
        assert [kind for kind, _, _ in stored(manager, session)] == ["human", "ai"] * 2

    def test_on_an_edited_chat_the_check_is_against_the_branch_shown(self, scripted):
        manager, model = scripted
        session = manager.create_session()
        session.send("first")
        asked = manager.store.load_stored(session.session_id)[0].id
        assert manager.chat.edit(session, asked, "first, edited").wait(10)
        branch_end = manager.store.load_stored(session.session_id)[-1].id
        run = manager.chat.regenerate(session, shown_last=branch_end)
        assert run.wait(10) and run.status == COMPLETE
        shown = manager.store.load_stored(session.session_id)[-1].id
        session.send("second")
        with pytest.raises(MessageRejected, match="changed in another tab"):
            manager.chat.regenerate(session, shown_last=shown)
        manager.store.choose_branch(session.session_id, asked)  # the old version shown:
        old_end = manager.store.load_stored(session.session_id)[-1].id  # not the newest row
        run = manager.chat.regenerate(session, shown_last=old_end)
        assert run.wait(10) and run.status == COMPLETE

    def test_a_message_from_a_page_that_missed_a_turn_is_refused(self, scripted):
        """A tab shows the chat up to "first"'s answer; another tab asks and gets an
        answer: the first tab's message would follow an answer it never showed."""
        manager, model = scripted
        session = manager.create_session()
        with pytest.raises(MessageRejected, match="changed in another tab"):
            session.start("hello", shown_last=1)  # showed a message that is not there
        session.send("first")
        shown_last = manager.store.load_stored(session.session_id)[-1].id
        session.send("second")
        before = stored(manager, session)
        with pytest.raises(MessageRejected, match="changed in another tab"):
            session.start("third", shown_last=shown_last)
        assert stored(manager, session) == before
        latest = manager.store.load_stored(session.session_id)[-1].id
        assert session.start("third", shown_last=latest).wait(10)  # the page caught up
        assert [text for kind, text, _ in stored(manager, session) if kind == "human"] == [
            "first", "second", "third"]

    def test_an_empty_chat_shown_refuses_a_message_once_another_tab_wrote_in_it(
            self, scripted):
        manager, model = scripted
        session = manager.create_session()
        assert session.start("first", shown_last=0).wait(10)  # it showed the chat empty
        with pytest.raises(MessageRejected, match="changed in another tab"):
            session.start("also first", shown_last=0)  # a second tab, still empty

    def test_a_message_from_a_page_showing_another_version_is_refused(self, scripted):
        """Two versions of the first message; a tab shows the newer while another tab
        switches back to the older: the tab's message would land in the version it did
        not show (a helper's walk: it did, and was answered from the other version)."""
        manager, model = scripted
        session = manager.create_session()
        session.send("My name is Ada.")
        asked = manager.store.load_stored(session.session_id)[0].id
        assert manager.chat.edit(session, asked, "My name is Bob.").wait(10)
        bob_end = manager.store.load_stored(session.session_id)[-1].id
        manager.store.choose_branch(session.session_id, asked)  # the other tab: back to Ada
        ada = stored(manager, session)
        with pytest.raises(MessageRejected, match="changed in another tab"):
            session.start("What is my name?", shown_last=bob_end)
        assert stored(manager, session) == ada
        manager.store.choose_branch(session.session_id, bob_end)
        assert session.start("What is my name?", shown_last=bob_end).wait(10)
        assert [text for kind, text, _ in stored(manager, session) if kind == "human"] == [
            "My name is Bob.", "What is my name?"]  # asked in the version it showed


class TestAcrossProcesses:
    def test_a_run_is_seen_in_progress_and_stopped_from_another_replica(self, scripted,
                                                                        db_url):
        manager, model = scripted
        model.enqueue(STORY, pause_after=4, pause=60)
        session = manager.create_session()
        run = session.start("tell me")
        first_tokens(run, 4)
        other = ChatbotSessionManager(DATABASE_URL=db_url)  # as another replica would
        try:
            assert other.chat.active_run(session.session_id) is None
            deadline = time.monotonic() + 10 * CHECKPOINT_EVERY
            while other.store.runs.latest_run(session.session_id)["status"] == RUNNING and (
                    stored(other, session)[-1][1] != "w1 w2 w3 w4 "):
                assert time.monotonic() < deadline
                run.wait(0.1)
            assert stored(other, session)[-1] == ("ai", "w1 w2 w3 w4 ", RUNNING)
            assert other.get_session(session.session_id).stop()  # asks the owner
            assert run.wait(10 * CHECKPOINT_EVERY)  # honoured at its next checkpoint
            assert stored(other, session)[-1] == ("ai", "w1 w2 w3 w4 ", STOPPED)
        finally:
            other.close()

    def test_a_chat_deleted_on_another_replica_stops_its_reply_here(self, scripted, db_url):
        """The delete takes the run's row (and its stop request) with it: the run's next
        checkpoint finds it gone and stops, no longer paying the provider for nobody."""
        manager, model = scripted
        model.enqueue(STORY, pause_after=4, pause=60)
        session = manager.create_session()
        run = session.start("tell me")
        first_tokens(run, 4)
        other = ChatbotSessionManager(DATABASE_URL=db_url)
        try:
            assert other.delete_session(session.session_id)
            assert run.wait(10 * CHECKPOINT_EVERY)  # at its next checkpoint, not in 60 s
            assert run.status == INTERRUPTED  # its rows were gone: nothing to mark stopped
            assert other.store.get_session(session.session_id) is None  # not brought back
        finally:
            other.close()


CHILD = """
import sys
from core import ChatbotSessionManager
manager = ChatbotSessionManager(DATABASE_URL=sys.argv[1], OFFLINE_STREAM_DELAY=0.3)
session = manager.create_session()
print(session.session_id, flush=True)
for event in session.stream("Tell me about yourself"):
    print("streaming", flush=True)
"""


def test_after_a_crash_the_checkpointed_partial_is_kept_marked_interrupted(db_url):
    child = subprocess.Popen([sys.executable, "-c", CHILD, db_url], cwd=ROOT,
                             stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    session_id = child.stdout.readline().strip()
    store_check = ChatbotSessionManager(DATABASE_URL=db_url)
    try:
        deadline = time.monotonic() + 30
        while True:  # wait until a checkpoint holds some text, then kill mid-reply
            assert child.stdout.readline().strip() == "streaming"
            rows = store_check.store.load_messages_with_status(session_id)
            if len(rows) == 2 and rows[1][0].text:
                break
            assert time.monotonic() < deadline
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        child.stdout.close()
        store_check.close()

    restarted = ChatbotSessionManager(DATABASE_URL=db_url)  # the next process
    try:
        rows = restarted.store.load_messages_with_status(session_id)
        assert [(type(m), s) for m, s in rows] == [(HumanMessage, COMPLETE),
                                                   (AIMessage, INTERRUPTED)]
        assert rows[1][0].text.startswith("I am PoolChat")
        assert restarted.store.runs.latest_run(session_id)["status"] == INTERRUPTED
        session = restarted.get_session(session_id)
        assert "offline demo" in session.send("hello again")  # the chat goes on
    finally:
        restarted.close()


def test_send_reports_a_stopped_reply_as_an_error(scripted):
    manager, model = scripted
    model.enqueue(STORY, pause_after=1, pause=60)
    session = manager.create_session()
    run = session.start("one")
    first_tokens(run, 1)
    session.stop()
    with pytest.raises(ChatError, match="stopped"):
        from core.chat import outcome

        outcome(run)
