"""The store: schema migrations, message round trips, ordering — on SQLite and PostgreSQL."""

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage, message_to_dict
from sqlalchemy import create_engine, insert, inspect, select
from sqlalchemy import text as sql

from core.direct_writes import DirectWriter, every_column
from core.migrations import MIGRATIONS, applied, migrate
from core.schema import feedback, messages, runs
from core.store import STOPPED, SessionStore, metadata


def test_a_blank_database_gets_the_whole_schema(store):
    assert applied(store.engine) == [m.__name__ for m in MIGRATIONS]
    assert {"sessions", "messages", "schema_migrations"} <= set(
        inspect(store.engine).get_table_names())


def test_migrating_twice_is_a_noop(store):
    assert migrate(store.engine, metadata) == []
    assert SessionStore(store.url, engine=store.engine).count_sessions() == 0


def test_messages_round_trip_with_tool_calls_in_order(store):
    store.ensure_session("s" * 32, owner="browser-1", title="Sums")
    batch = [
        HumanMessage("what is 12*7?"),
        AIMessage("", tool_calls=[{"name": "calculator", "args": {"expression": "12*7"},
                                   "id": "call_1"}]),
        ToolMessage("84", tool_call_id="call_1", name="calculator"),
        AIMessage("12*7 = 84"),
    ]
    store.append_messages("s" * 32, batch)
    loaded = store.load_messages("s" * 32)
    assert [type(m) for m in loaded] == [type(m) for m in batch]
    assert loaded[1].tool_calls[0]["args"] == {"expression": "12*7"}
    assert loaded[2].tool_call_id == "call_1"
    assert store.load_messages("s" * 32, last=2) == loaded[2:]


def test_a_partial_reply_keeps_its_status(store):
    store.ensure_session("p" * 32)
    store.append_messages("p" * 32, [HumanMessage("hi")])
    store.append_messages("p" * 32, [AIMessage("half a rep")], status=STOPPED)
    assert [s for _, s in store.load_messages_with_status("p" * 32)] == ["complete", STOPPED]


def test_ensure_session_is_idempotent_and_lists_by_owner(store):
    for _ in range(2):
        store.ensure_session("a" * 32, owner="one", title="first")
    store.ensure_session("b" * 32, owner="two", title="second")
    assert [s["id"] for s in store.list_sessions(owner="one")] == ["a" * 32]
    assert len(store.list_sessions()) == 2
    assert store.count_sessions() == 0  # conversations are counted once they have a message
    store.append_messages("a" * 32, [HumanMessage("hi")])
    assert store.count_sessions() == 1


def test_deleting_a_session_deletes_its_messages(store):
    store.ensure_session("d" * 32)
    store.append_messages("d" * 32, [HumanMessage("bye")])
    assert store.delete_session("d" * 32)
    assert store.count_messages() == 0 and store.get_session("d" * 32) is None
    assert not store.delete_session("d" * 32)


def test_sqlite_runs_in_wal_mode(sqlite_url):
    store = SessionStore(sqlite_url)
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    store.close()


def test_a_first_release_database_is_brought_up_to_date(db_url):
    from sqlalchemy import create_engine

    from core.migrations import m001_initial

    engine = create_engine(db_url)
    migrate(engine, metadata, steps=[m001_initial])
    columns = {c["name"] for c in inspect(engine).get_columns("sessions")}
    assert "agent_model" not in columns
    store = SessionStore(db_url)
    assert applied(store.engine) == [m.__name__ for m in MIGRATIONS]
    store.ensure_session("m" * 32, agent_spec={"model": "llama3", "system_prompt": "",
                                               "temperature": 0.1})
    assert store.get_session("m" * 32)["agent_spec"]["model"] == "llama3"
    assert {"agent_model", "model", "custom_agent", "run_id", "parent_id", "branch_id"} <= {
        c["name"] for table in ("sessions", "messages")
        for c in inspect(store.engine).get_columns(table)}
    store.close()
    engine.dispose()


def test_a_shared_chat_counts_under_each_model_that_answered_it(store):
    """A member changed model mid-conversation (live reconfiguration): the chat's replies
    and the chat itself are filed under the model of each reply, none under the model
    configured at start-up; a chat with no reply yet is under none."""
    store.ensure_session("s" * 32)
    store.append_messages("s" * 32, [HumanMessage("hi"), AIMessage("hello")],
                          model="fake-1")
    store.append_messages("s" * 32, [HumanMessage("and now?"), AIMessage("still here")],
                          model="fake-2")
    store.ensure_session("e" * 32, agent_spec={"model": "llama3", "system_prompt": "",
                                               "temperature": 0.1})
    assert store.usage_by_agent(shared_model="configured") == [
        {"agent": "shared", "model": "fake-1", "sessions": 1, "messages": 1},
        {"agent": "shared", "model": "fake-2", "sessions": 1, "messages": 1},
    ]


def test_usage_is_counted_per_agent_and_model(store):
    store.ensure_session("u" * 32)
    store.ensure_session("c" * 32, agent_spec={"model": "llama3", "system_prompt": "",
                                               "temperature": 0.1})
    store.append_messages("u" * 32, [HumanMessage("hi"), AIMessage("hello")],
                          model="offline-demo")
    store.append_messages("c" * 32, [HumanMessage("hi"), AIMessage("hey")],
                          model="llama3", custom_agent=True)
    assert store.usage_by_agent(shared_model="offline-demo") == [
        {"agent": "custom", "model": "llama3", "sessions": 1, "messages": 1},
        {"agent": "shared", "model": "offline-demo", "sessions": 1, "messages": 1},
    ]


def test_a_write_interrupted_mid_statement_leaves_the_database_writable(store):
    """E.g. Ctrl-C between an INSERT ... RETURNING and reading its id: nothing is kept,
    and the pooled connection does not block every later commit."""
    store.ensure_session("k" * 32)
    writer = DirectWriter(store.engine, threading.Lock())
    insert_returning = writer.compile(insert(messages).values(
        every_column(messages, but=messages.c.id)).returning(messages.c.id))
    row = {"session_id": "k" * 32, "role": "human", "content": "lost", "payload": "{}",
           "status": "complete", "model": None, "custom_agent": False, "created_at": 0.0,
           "run_id": None, "parent_id": None}
    try:
        with writer.transaction() as execute:
            execute(insert_returning, row)  # its RETURNING row is never read
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    for text in ("one", "two", "three"):  # every pooled connection gets used again
        store.append_messages("k" * 32, [HumanMessage(text)])
    assert [m.text for m in store.load_messages("k" * 32)] == ["one", "two", "three"]


def test_messages_stored_before_branches_become_one_line(db_url):
    """m006: an existing conversation reads as before; each message follows the last."""
    from sqlalchemy import create_engine, text

    from core.migrations import MIGRATIONS

    engine = create_engine(db_url)
    before = MIGRATIONS[:MIGRATIONS.index(next(m for m in MIGRATIONS
                                               if m.__name__ == "m006_branches"))]
    migrate(engine, metadata, steps=before)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO sessions (id, owner, title, created_at, updated_at) "
                          "VALUES ('o' || repeat('x', 31), NULL, 'old', 0, 0)"
                          if engine.dialect.name == "postgresql" else
                          "INSERT INTO sessions (id, owner, title, created_at, updated_at) "
                          "VALUES ('oxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx', NULL, 'old', 0, 0)"))
        for i, (role, content) in enumerate([("human", "hi"), ("ai", "hello"),
                                             ("human", "bye")]):
            payload = json.dumps(message_to_dict(
                HumanMessage(content) if role == "human" else AIMessage(content)))
            conn.execute(text(
                "INSERT INTO messages (session_id, role, content, payload, status, "
                "custom_agent, created_at) VALUES (:sid, :role, :content, :payload, "
                "'complete', false, :at)"), {"sid": "o" + "x" * 31, "role": role,
                                             "content": content, "payload": payload, "at": i})
    store = SessionStore(db_url)
    try:
        sid = "o" + "x" * 31
        assert [m.text for m in store.load_messages(sid)] == ["hi", "hello", "bye"]
        with store.engine.connect() as conn:
            links = conn.execute(text("SELECT id, parent_id FROM messages ORDER BY id")).all()
        assert [parent for _, parent in links] == [None, links[0][0], links[1][0]]
    finally:
        store.close()
        engine.dispose()


def test_a_deleted_chats_run_ending_late_never_touches_another_chats_rows(db_url):
    """A chat deleted while its reply waits: its id may be reused by the next chat's
    reply (SQLite reuses the highest rowid); the late end must not remove or fill it."""
    import time as clock

    from core.store import SessionStore

    store = SessionStore(db_url)

    def start(sid, rid, text):
        return store.runs.start_turn(sid, HumanMessage(text),
                                     run={"id": rid, "agent": "", "replica": "r"},
                                     reply={"model": "m", "custom_agent": False},
                                     stale_before=clock.time() - 30,
                                     new_session={"owner": "o"}, title=text)

    alice = start("a" * 32, "run-a", "alice question")
    store.delete_session("a" * 32)
    bob = start("b" * 32, "run-b", "bob question")
    store.runs.checkpoint([(alice.reply_id, "run-a", AIMessage("alice partial"), "")], ["run-a"])
    store.runs.finish_turn("a" * 32, "run-a", alice.reply_id, AIMessage("ALICE PRIVATE"),
                           "complete")
    store.runs.finish_turn("a" * 32, "run-a", alice.reply_id, None, "stopped")
    rows = store.load_rows("b" * 32, last=10)
    assert [(i, m.type, m.text) for i, m, _ in rows] == [
        (bob.user_message_id, "human", "bob question"), (bob.reply_id, "ai", "")]
    store.close()


def test_the_change_mark_moves_with_anything_a_chat_page_shows_and_nothing_else(store):
    store.ensure_session("chat-a", owner="me", title="A")
    ids = store.append_messages("chat-a", [HumanMessage("hi"), AIMessage("hello")])
    mark = store.change_mark("chat-a", "me")
    assert store.change_mark("chat-a", "me") == mark  # nothing happened

    store.ensure_session("chat-of-someone-else", owner="you", title="B")
    store.append_messages("chat-of-someone-else", [HumanMessage("hey")])
    assert store.change_mark("chat-a", "me") == mark  # another browser's chats

    changes = [
        lambda: store.append_messages("chat-a", [HumanMessage("more")], touch=False),
        lambda: store.choose_branch("chat-a", ids[0]),
        lambda: store.update_session("chat-a", title="Renamed"),
        lambda: store.update_session("chat-a", agent_spec={"model": "m2"}),
        lambda: store.ensure_session("chat-c", owner="me"),  # a new chat in the list
        lambda: store.delete_session("chat-c"),
        lambda: store.set_feedback("chat-a", ids[1], 1),  # feedback from another tab
        lambda: store.set_feedback("chat-a", ids[1], 1, "Spot on"),
        lambda: store.set_feedback("chat-a", ids[1], None),
    ]
    for change in changes:
        change()
        moved = store.change_mark("chat-a", "me")
        assert moved != mark
        mark = moved


def test_feedback_written_on_two_replicas_at_once_is_one_row_not_an_error(pg_url):
    """Another replica's feedback on the same reply, not committed yet, when this one
    turns the thumb: this one waits for it, then turns it, keeping its comment."""
    store, other = SessionStore(pg_url), create_engine(pg_url)
    store.ensure_session("chat-a")
    _, reply = store.append_messages("chat-a", [HumanMessage("hi"), AIMessage("hello")])
    with ThreadPoolExecutor(1) as pool, other.begin() as conn:
        conn.execute(insert(feedback).values(message_id=reply, session_id="chat-a", score=1,
                                              comment="Nice", updated_at=0))
        turned = pool.submit(store.set_feedback, "chat-a", reply, 0)
        _wait_for_a_lock_wait(conn, turned)
    assert turned.result(timeout=30) is True
    with store.engine.connect() as conn:
        assert conn.execute(select(feedback.c.score, feedback.c.comment)).all() == [(0, "Nice")]

    # a comment saved from a tab drawn before another replica's change, in flight: refused
    with ThreadPoolExecutor(1) as pool, other.begin() as conn:
        conn.execute(feedback.update().values(comment="Better: wrong"))
        stale = pool.submit(store.set_feedback, "chat-a", reply, 0, "Stale", (0, "Nice"))
        _wait_for_a_lock_wait(conn, stale)
    assert stale.result(timeout=30) is False
    with store.engine.connect() as conn:
        assert conn.execute(select(feedback.c.comment)).scalar() == "Better: wrong"
    store.close()
    other.dispose()


def test_a_chat_deleted_while_another_replica_checkpoints_its_reply_is_no_deadlock(pg_url):
    """A checkpoint locks the reply row, then the run's; a chat's delete takes them in
    the same order (it took the run's first: PostgreSQL then aborted one of the two)."""
    from sqlalchemy import event

    here, there = SessionStore(pg_url), SessionStore(pg_url)
    here.ensure_session("chat-a")
    started = here.runs.start_turn("chat-a", HumanMessage("q"),
                                   run={"id": "r" * 24, "agent": "", "replica": "here"},
                                   reply={"model": "m"}, stale_before=time.time() - 60)
    holding, release = threading.Event(), threading.Event()
    watching = create_engine(pg_url)

    @event.listens_for(here.engine, "after_cursor_execute")
    def hold_the_reply_row(conn, cursor, statement, *args):
        if statement.startswith("UPDATE messages"):
            holding.set()
            assert release.wait(30)

    with ThreadPoolExecutor(2) as pool, watching.connect() as watcher:
        checkpoint = pool.submit(here.runs.checkpoint, [
            (started.reply_id, "r" * 24, AIMessage("half"), "m")], ["r" * 24])
        assert holding.wait(30)
        deleted = pool.submit(there.delete_session, "chat-a")
        _wait_for_a_lock_wait(watcher, deleted)  # the delete waits for the reply row
        release.set()
        assert checkpoint.result(timeout=30) == set()  # then the delete goes on
        assert deleted.result(timeout=30) is True
    assert there.get_session("chat-a") is None
    here.close()
    there.close()
    watching.dispose()


def test_a_thumb_given_as_its_chat_is_deleted_elsewhere_is_refused_not_an_error(pg_url):
    """The reply's row is being deleted by another replica (not committed yet) when the
    thumb is stored: the store says no (False), as for any reply not there."""
    store, other = SessionStore(pg_url), create_engine(pg_url)
    store.ensure_session("chat-a")
    _, reply = store.append_messages("chat-a", [HumanMessage("hi"), AIMessage("hello")])
    with ThreadPoolExecutor(1) as pool, other.begin() as conn:
        conn.execute(messages.delete().where(messages.c.session_id == "chat-a"))
        thumb = pool.submit(store.set_feedback, "chat-a", reply, 1)
        _wait_for_a_lock_wait(conn, thumb)
    assert thumb.result(timeout=30) is False
    store.close()
    other.dispose()


def _wait_for_a_lock_wait(conn, future, seconds: float = 30) -> None:
    """Until another backend waits for a lock this connection holds (or ``future`` ends,
    which shows it did not wait)."""
    deadline = time.monotonic() + seconds
    while not future.done() and time.monotonic() < deadline:
        if conn.execute(sql("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type"
                             " = 'Lock' AND datname = current_database()")).scalar():
            return
        time.sleep(0.01)
    raise AssertionError("the write did not wait for the other replica's")


def test_a_reply_with_a_tool_step_counts_as_one_reply(make_manager):
    manager = make_manager(RATE_LIMIT_PER_MINUTE=0)
    session = manager.create_session()
    assert session.send("what is 6*7?") == "6*7 = 42"  # a tool call, its result, the answer
    roles = [m.message.type for m in manager.store.load_stored(session.session_id)]
    assert roles == ["human", "ai", "tool", "ai"]
    (shared,) = manager.store.usage_by_agent(shared_model="offline-demo")
    assert (shared["sessions"], shared["messages"]) == (1, 1)


def test_a_regenerate_whose_process_died_replaces_the_answer_only_if_it_wrote_some(store):
    """The sweep ends a dead replica's runs: a regenerate that had checkpointed text
    stands in for the old answer; one that had written nothing leaves the old answer."""
    import time

    from core.ids import new_run_id

    def regenerate_then_die(session_id: str, words: str) -> None:
        run_id = new_run_id()
        started = store.runs.start_turn(session_id, None, run={"id": run_id, "agent": "",
                                                               "replica": "dead"},
                                        reply={"model": "m"}, stale_before=time.time() - 10)
        if words:
            store.runs.checkpoint([(started.reply_id, run_id, AIMessage(words), "")], [run_id])

    for session_id, words in (("w" * 32, "Half of a new"), ("n" * 32, "")):
        store.ensure_session(session_id)
        store.append_messages(session_id, [HumanMessage("question"),
                                           AIMessage("old answer")])
        regenerate_then_die(session_id, words)
    assert store.runs.interrupt_stale_runs(cutoff=time.time() + 1) == 2
    assert [(m.text, status) for m, status in store.load_messages_with_status("w" * 32)] == [
        ("question", "complete"), ("Half of a new", "interrupted")]
    assert [(m.text, status) for m, status in store.load_messages_with_status("n" * 32)] == [
        ("question", "complete"), ("old answer", "complete")]


def test_a_run_that_ends_while_the_sweep_looks_is_left_as_it_ended(store):
    """The sweep reads the running runs, then ends the orphans in a transaction of its
    own. A run that completed in between (and whose chat went on to its next turn) is
    no orphan: it keeps its status, and the next turn's messages stay."""
    import time

    from core.ids import new_run_id

    session_id = "r" * 32
    store.ensure_session(session_id)
    run_id = new_run_id()

    def turn(run: str, question: str, answer: str):
        started = store.runs.start_turn(session_id, HumanMessage(question),
                                        run={"id": run, "agent": "", "replica": "here"},
                                        reply={"model": "m"}, stale_before=time.time() - 10)
        return lambda: store.runs.finish_turn(session_id, run, started.reply_id,
                                              AIMessage(answer), "complete")

    finish_first = turn(run_id, "first", "one")

    def gone(run: str, _replica: str) -> bool:
        """Asked while the sweep looks: meanwhile the run ends and the chat goes on."""
        finish_first()
        turn(new_run_id(), "second", "two")()
        return True  # as a process that no longer runs it would say

    assert store.runs.interrupt_stale_runs(cutoff=0.0, gone=gone) == 0
    assert [(m.text, status) for m, status in store.load_messages_with_status(session_id)] \
        == [("first", "complete"), ("one", "complete"), ("second", "complete"),
            ("two", "complete")]
    with store.engine.connect() as conn:
        assert conn.execute(select(runs.c.status)).scalars().all() == ["complete"] * 2


def test_a_run_whose_owner_checkpoints_while_the_sweep_looks_goes_on(store):
    """Silent past the cutoff when the sweep read it, alive (checkpointed) by the time
    the sweep writes: the run is not ended under its owner."""
    import time

    from core.ids import new_run_id

    session_id = "k" * 32
    store.ensure_session(session_id)
    run_id = new_run_id()
    started = store.runs.start_turn(session_id, HumanMessage("question"),
                                    run={"id": run_id, "agent": "", "replica": "alive"},
                                    reply={"model": "m"}, stale_before=time.time() - 10)
    cutoff = time.time()

    def gone(run: str, _replica: str) -> bool:
        store.runs.checkpoint([(started.reply_id, run, AIMessage("Half"), "")], [run])
        return False

    assert store.runs.interrupt_stale_runs(cutoff, gone=gone) == 0
    assert store.runs.running_run(session_id)["id"] == run_id


def test_a_run_ended_elsewhere_as_stale_writes_nothing_when_it_ends_late(store):
    """A regenerate's owner stopped checkpointing a while (a stalled process, a database
    partition) but its model went on; meanwhile the chat went on elsewhere: its next
    message found the run stale, ended it, and was answered. When the late run ends, or
    finishes a tool step, it writes none of its rows (its end would drop what it
    replaced below its question: the chat's next turn), only its usage (the model was
    paid for), and says so."""
    import time

    from core.ids import new_run_id
    from core.run_log import RunEnded
    from core.schema import COMPLETE, INTERRUPTED, usage

    sid = "q" * 32
    store.ensure_session(sid)
    store.append_messages(sid, [HumanMessage("Q"), AIMessage("old answer")])
    late = new_run_id()
    started = store.runs.start_turn(sid, None, run={"id": late, "agent": "", "replica": "a"},
                                    reply={"model": "m"}, stale_before=time.time() - 10)
    store.runs.checkpoint([(started.reply_id, late, AIMessage("new ans"), "")], [late])
    went_on = new_run_id()
    second = store.runs.start_turn(sid, HumanMessage("Q2"),
                                   run={"id": went_on, "agent": "", "replica": "b"},
                                   reply={"model": "m"}, stale_before=time.time() + 1)
    assert store.runs.finish_turn(sid, went_on, second.reply_id, AIMessage("answer 2"),
                                  COMPLETE)
    stored = [(m.text, status) for m, status in store.load_messages_with_status(sid)]
    assert stored == [("Q", "complete"), ("new ans", INTERRUPTED), ("Q2", "complete"),
                      ("answer 2", "complete")]

    with pytest.raises(RunEnded):
        store.runs.advance_reply(sid, late, started.reply_id,
                                 AIMessage("", tool_calls=[{"id": "c1", "name": "calculator",
                                                            "args": {"expression": "1+1"}}]),
                                 [ToolMessage("2", tool_call_id="c1")], {"model": "m"})
    assert not store.runs.finish_turn(
        sid, late, started.reply_id, AIMessage("new answer, in full"), COMPLETE,
        usage={"run_id": late, "owner": "anonymous", "model": "m", "member": "pool:0",
               "agent_version": 1, "custom": False, "status": COMPLETE, "input_tokens": 3,
               "output_tokens": 4, "estimated": True, "cost": None, "ttft": 0.1,
               "total_seconds": 0.2, "queue_seconds": 0.0, "finished_at": time.time()},
        replaces=started.user_message_id)
    assert [(m.text, status) for m, status in store.load_messages_with_status(sid)] \
        == stored
    with store.engine.connect() as conn:
        assert conn.execute(select(runs.c.status).where(runs.c.id == late)).scalar() \
            == INTERRUPTED
        assert conn.execute(select(usage.c.output_tokens).where(usage.c.run_id == late)
                            ).scalar() == 4


def test_a_reply_cut_off_after_its_tool_step_says_so(store):
    """A run that stored a tool step, then ended before its answer's first word (its
    process died and the sweep ended it, or the user stopped it): the step is kept and
    an empty reply row after it carries how the run ended, so the page and the export
    do not show the step as a finished reply."""
    import time

    from core.ids import new_run_id

    def step_then(session_id: str, end) -> None:
        store.ensure_session(session_id)
        run_id = new_run_id()
        started = store.runs.start_turn(session_id, HumanMessage("what is 2+3"),
                                        run={"id": run_id, "agent": "", "replica": "dead"},
                                        reply={"model": "m"}, stale_before=time.time() - 10)
        call = AIMessage("", tool_calls=[{"name": "calculator", "args": {"expression": "2+3"},
                                          "id": "c1"}])
        _ids, next_id = store.runs.advance_reply(
            session_id, run_id, started.reply_id, call,
            [ToolMessage("5", tool_call_id="c1", name="calculator")], {"model": "m"})
        end(session_id, run_id, next_id)

    step_then("d" * 32, lambda *_: store.runs.interrupt_stale_runs(cutoff=time.time() + 1))
    step_then("s" * 32, lambda sid, rid, reply: store.runs.finish_turn(
        sid, rid, reply, None, "stopped", steps=True))
    for session_id, ended in (("d" * 32, "interrupted"), ("s" * 32, "stopped")):
        rows = store.load_messages_with_status(session_id)
        assert [(type(m).__name__, m.text, status) for m, status in rows] == [
            ("HumanMessage", "what is 2+3", "complete"), ("AIMessage", "", "complete"),
            ("ToolMessage", "5", "complete"), ("AIMessage", "", ended)]


def test_a_regenerate_written_elsewhere_shows_its_reply_not_the_old_answer_beside_it(store):
    """Another replica regenerates the last answer: until it ends, a page loaded here
    shows the question and the new reply so far, not the old answer in the same bubble;
    the old answer is still stored (the run may yet store nothing and leave it)."""
    import time

    from core.ids import new_run_id

    session_id = "r" * 32
    store.ensure_session(session_id)
    store.append_messages(session_id, [HumanMessage("first"), AIMessage("one"),
                                       HumanMessage("question"), AIMessage("old answer")])
    run_id = new_run_id()
    started = store.runs.start_turn(session_id, None, run={"id": run_id, "agent": "",
                                                           "replica": "elsewhere"},
                                    reply={"model": "m"}, stale_before=time.time() - 10)
    store.runs.checkpoint([(started.reply_id, run_id, AIMessage("Half of a new"), "")], [run_id])
    shown = [(r.message.text, r.status) for r in store.load_stored(session_id)]
    assert shown == [("first", "complete"), ("one", "complete"), ("question", "complete"),
                     ("Half of a new", "running")]
    assert [r.message.text for r in store.load_stored(session_id, last=2)] == [
        "question", "Half of a new"]
    store.runs.finish_turn(session_id, run_id, started.reply_id, AIMessage("A new answer"),
                           "complete", replaces=started.user_message_id)
    assert [m.text for m in store.load_messages(session_id)] == [
        "first", "one", "question", "A new answer"]


@pytest.mark.parametrize("end", ["swept", "stopped"])
def test_a_regenerate_that_wrote_only_a_tool_step_leaves_the_answer_it_would_replace(
        make_manager, end):
    """A tool call is no answer: whether its replica died (swept) or its user stopped
    it there, the previous answer stays and the regenerate's own rows go."""
    import time

    manager = make_manager(RATE_LIMIT_PER_MINUTE=0)
    session = manager.create_session(owner="ada")
    session.send("hello")
    before = [(r.message.type, r.message.text) for r in manager.store.load_stored(
        session.session_id)]
    log, sid = manager.store.runs, session.session_id
    started = log.start_turn(sid, None, run={"id": "regen-1", "agent": "pool:0",
                                             "replica": "gone-host-1-abc"},
                             reply={"model": "offline-demo"}, stale_before=0)
    call = AIMessage("", tool_calls=[{"name": "calculator", "args": {"expression": "1+1"},
                                      "id": "c1"}])
    _, reply_id = log.advance_reply(sid, "regen-1", started.reply_id, call,
                                    [ToolMessage("2", tool_call_id="c1", name="calculator")],
                                    {"model": "offline-demo", "custom_agent": False})
    if end == "swept":
        assert log.interrupt_stale_runs(time.time() + 100)
    else:
        assert log.finish_turn(sid, "regen-1", reply_id, None, STOPPED, steps=True,
                               replaces=started.user_message_id)
    assert [(r.message.type, r.message.text) for r in manager.store.load_stored(sid)] == before
