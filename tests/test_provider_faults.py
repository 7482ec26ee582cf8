"""Provider faults through the real client: ChatOpenAI, pointed by OPENAI_BASE_URL at a
fake OpenAI-compatible server on 127.0.0.1 that answers as told.

For each fault: a clear message, the user's message stored, the pool counts the error,
and the next message works. A streamed reply cut short is stored, marked interrupted.
"""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from core.errors import ChatError
from core.store import INTERRUPTED
from tests.fake_openai import FakeOpenAI


@pytest.fixture
def fake():
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def chat(fake, make_manager):
    def build(**settings):
        settings = {"OPENAI_API_KEY": "sk-test-secret", "OPENAI_BASE_URL": fake.url,
                    "OPENAI_TIMEOUT": 10, "OPENAI_MAX_RETRIES": 0, "CHAT_MODEL": "fake-1",
                    **settings}
        manager = make_manager(**settings)
        return manager, manager.create_session()
    return build


def humans(session) -> list[str]:
    return [m.text for m in session.messages if isinstance(m, HumanMessage)]


class TestWireProtocol:
    def test_plain_streaming_and_tool_calls_round_trip(self, chat, fake):
        manager, session = chat()
        assert session.send("hello") == "Hello from the fake model, all good."
        assert session.send("what is 12*7") == "The answer is 84."
        assert any(isinstance(m, ToolMessage) and m.text == "84" for m in session.messages)
        streamed = "".join(e.text for e in session.stream("hello again") if hasattr(e, "text"))
        assert streamed == "Hello from the fake model, all good."
        assert fake.requests[0]["auth"] == "Bearer sk-test-secret"
        assert fake.requests[0]["body"]["model"] == "fake-1"
        assert manager.get_stats()["offline_model"] is False


@pytest.mark.parametrize("mode,message", [
    ("401", "rejected the API key"),
    ("500", "failed with HTTP 500"),
    ("429", "rate-limiting"),
    ("hang", "did not answer in time"),
    ("malformed", "failed"),
])
@pytest.mark.parametrize("streaming", [False, True])
def test_a_fault_is_a_clear_error_and_the_next_message_works(chat, fake, mode, message,
                                                             streaming):
    manager, session = chat(**({"OPENAI_TIMEOUT": 1} if mode == "hang" else {}))
    fake.modes.append(mode)
    with pytest.raises(ChatError, match=message) as error:
        if streaming:
            list(session.stream("are you there?"))
        else:
            session.send("are you there?")
    assert len(fake.requests) == 1  # retries off: one request, then the clear error
    assert "sk-test-secret" not in str(error.value)
    assert humans(session) == ["are you there?"]
    counted = "rate_limited" if mode == "429" else "errors"  # a 429 is not the member's fault
    assert manager.get_stats()["pool"][0][counted] == 1
    assert session.send("hello") == "Hello from the fake model, all good."


def test_a_dropped_stream_is_stored_marked_interrupted(chat, fake):
    manager, session = chat()
    fake.modes.append("drop")
    with pytest.raises(ChatError, match="cut off"):
        list(session.stream("hello"))
    stored = manager.store.load_messages_with_status(session.session_id)
    assert [(type(m), s) for m, s in stored] == [(HumanMessage, "complete"),
                                                 (AIMessage, INTERRUPTED)]
    assert stored[-1][0].text == "Hello "
    usage = manager.get_stats()["pool"][0]
    assert (usage["interrupted"], usage["errors"]) == (1, 0)  # cut off, not a failure
    fake.modes.append("drop")
    with pytest.raises(ChatError, match="cut off"):
        session.send("hello again")  # without streaming the same check applies
    assert session.send("hello") == "Hello from the fake model, all good."


def test_retries_follow_retry_after_within_the_configured_bound(chat, fake):
    _, session = chat(OPENAI_MAX_RETRIES=2)
    fake.modes.extend(["429", "429"])
    assert session.send("hello") == "Hello from the fake model, all good."
    times = [r["at"] for r in fake.requests]
    assert len(times) == 3
    assert all(later - earlier >= 0.9 for earlier, later in zip(times, times[1:]))
    fake.modes.extend(["429", "429", "429"])
    with pytest.raises(ChatError, match="rate-limiting"):
        session.send("hello")
    assert len(fake.requests) == 6  # 1 + 2 retries, then it gives up


def test_a_regenerate_that_fails_after_its_tool_step_keeps_the_answer_it_was_to_replace(
        chat, fake):
    """A tool call is no answer: the old one stays, as when it fails before any word."""
    manager, session = chat()
    assert session.send("what is 3*4") == "The answer is 12."
    before = [(r.message.type, r.message.text, r.status)
              for r in manager.store.load_stored(session.session_id)]
    fake.modes.extend(["ok", "500", "500", "500"])  # the tool call, then failures
    run = manager.chat.regenerate(session)
    assert run.wait(20) and run.status == "interrupted" and "HTTP 500" in run.error
    assert [(r.message.type, r.message.text, r.status)
            for r in manager.store.load_stored(session.session_id)] == before


def test_a_tool_step_is_stored_with_the_model_that_made_it(chat, fake):
    """After a member's model is changed, every row of a reply names the new one: the
    tool call as well as the answer (the step's row was given the start's guess)."""
    from sqlalchemy import select

    from core import AgentSpec
    from core.schema import messages

    manager, session = chat()
    manager.members.reconfigure("pool:0", AgentSpec("fake-2", "", 0.0))
    assert session.send("what is 3*4") == "The answer is 12."
    with manager.store.engine.connect() as conn:
        models = conn.execute(select(messages.c.model).where(
            messages.c.role == "ai").order_by(messages.c.id)).scalars().all()
    assert models == ["fake-2", "fake-2"]  # the tool call, the answer
    assert fake.requests[-1]["body"]["model"] == "fake-2"


def test_a_tool_step_names_the_new_model_before_the_reply_ends(chat, fake):
    """What a crash right after the tool step leaves behind: the step's rows, stored
    before the answer is asked for, already name the member's model of now (the end,
    which a crash never reaches, used to be what put it right)."""
    import time

    from sqlalchemy import select

    from core import AgentSpec
    from core.schema import messages

    manager, session = chat()
    manager.members.reconfigure("pool:0", AgentSpec("fake-2", "", 0.0))
    fake.modes.extend(["ok", "hang"])  # the tool call, then an answer that never comes
    run = session.start("what is 3*4")
    rows = []
    deadline = time.monotonic() + 20
    while len(rows) < 2 and time.monotonic() < deadline:  # the step is stored
        with manager.store.engine.connect() as conn:
            rows = conn.execute(select(messages.c.role, messages.c.model).where(
                messages.c.role.in_(["ai", "tool"]), messages.c.status == "complete")
            ).all()
        if len(rows) < 2:
            run.wait(0.05)
    try:
        assert sorted(rows) == [("ai", "fake-2"), ("tool", None)]  # the call, its result
        assert run.status == "running"  # as a crash would find it: no end yet
    finally:  # the hung request is let go; the run is stopped, not left to time out
        fake.release.set()
        manager.chat.stop(session.session_id)
        assert run.wait(20)
