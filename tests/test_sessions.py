"""Sessions over the shared pool: what a user of the core library can rely on.

Sessions hold no history in memory: it is in the store, so a new manager on the same
database resumes every chat, and idle sessions can be evicted and reloaded freely.
"""

import asyncio
import threading

import openai
import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from core.agents import AgentSpec
from core.errors import ChatError, MessageRejected
from core.ids import is_valid_session_id
from core.store import STOPPED
from core.turns import Token, ToolCall, ToolResult
from tests.fakes import (
    ScriptedModel,
    first_words,
    observed_factory,
    offline_factory,
    scripted_factory,
)


class TestPool:
    def test_size_one_shares_one_agent_between_all_sessions(self, make_manager):
        manager = make_manager()
        sessions = [manager.create_session() for _ in range(5)]
        assert {id(s.agent) for s in sessions} == {id(manager.pool.agents[0])}
        assert manager.get_stats()["agent_pool_size"] == 1
        assert manager.get_stats()["own_settings"] is None  # no members: they share it

    def test_the_pool_is_built_once_not_per_session(self, make_manager):
        built = []
        factory = offline_factory()
        manager = make_manager(agent_factory=lambda spec: built.append(spec) or factory(spec),
                               pool_size=3)
        for _ in range(20):
            manager.create_session().send("hi")
        assert len(built) == 3

    def test_size_n_spreads_sessions_round_robin(self, make_manager):
        manager = make_manager(pool_size=4)
        sessions = [manager.create_session() for _ in range(8)]
        agents = [manager.pool.agents.index(s.agent) for s in sessions]
        assert agents == [0, 1, 2, 3, 0, 1, 2, 3]
        for session in sessions:
            session.send("hello")
        assert [a["served"] for a in manager.get_stats()["pool"]] == [2, 2, 2, 2]


class TestChatting:
    def test_arithmetic_is_answered_through_a_tool_call(self, make_manager):
        session = make_manager().create_session()
        assert session.send("what is 12*7?") == "12*7 = 84"
        kinds = [type(m) for m in session.messages]
        assert kinds == [HumanMessage, AIMessage, ToolMessage, AIMessage]

    def test_each_session_has_its_own_history(self, make_manager):
        manager = make_manager(agent_factory=scripted_factory(ScriptedModel(answer=first_words)))
        lin, max_ = manager.create_session(), manager.create_session()
        lin.send("I am Lin.")
        max_.send("I am Max.")
        assert lin.send("Who am I?") == "I am Lin. (2)"
        assert max_.send("Who am I?") == "I am Max. (2)"
        assert manager.create_session().send("Who am I?") == "Who am I? (1)"

    def test_streaming_yields_tool_steps_then_tokens_and_stores_the_turn(self, make_manager):
        session = make_manager().create_session()
        events = list(session.stream("what is 6*7"))
        assert isinstance(events[0], ToolCall) and events[0].args == {"expression": "6*7"}
        assert isinstance(events[1], ToolResult) and events[1].content == "42"
        assert "".join(e.text for e in events if isinstance(e, Token)) == "6*7 = 42"
        assert session.messages[-1].text == "6*7 = 42"

    def test_a_stopped_reply_keeps_the_partial_marked_stopped(self, make_manager):
        model = ScriptedModel().enqueue("Once upon a time", pause_after=1, pause=60)
        manager = make_manager(agent_factory=scripted_factory(model))
        session = manager.create_session()
        stream = session.stream("tell me a story")
        first = next(stream)  # then the model stalls: the stop, not the clock, ends it
        assert isinstance(first, Token)
        session.stop()
        stored = manager.store.load_messages_with_status(session.session_id)
        assert [(type(m), s) for m, s in stored] == [(HumanMessage, "complete"),
                                                     (AIMessage, STOPPED)]
        assert stored[-1][0].text == first.text
        assert manager.pool.snapshot()[0]["in_flight"] == 0

    def test_the_users_message_is_stored_before_the_model_is_called(self, make_manager):
        seen = []
        manager = make_manager(agent_factory=observed_factory(
            lambda messages: seen.append([m.text for m in manager.store.load_messages(sid)
                                          if m.type == "human"])))
        session = manager.create_session()
        sid = session.session_id
        session.send("hello")
        assert seen == [["hello"]]

    def test_a_provider_failure_is_a_clear_error_and_loses_nothing(self, make_manager):
        import httpx
        request = httpx.Request("POST", "http://127.0.0.1/v1/chat/completions")
        failure = openai.RateLimitError("slow down", response=httpx.Response(
            429, request=request, headers={"Retry-After": "0.05"}), body=None)
        manager = make_manager(agent_factory=offline_factory(fail_with=failure),
                               OPENAI_MAX_RETRIES=0)
        session = manager.create_session()
        with pytest.raises(ChatError, match="rate-limiting"):
            session.send("are you there?")
        assert [m.text for m in session.messages] == ["are you there?"]
        assert manager.get_stats()["pool"][0]["rate_limited"] == 1
        with pytest.raises(ChatError):
            list(session.stream("still there?"))
        assert [m.text for m in session.messages] == ["are you there?", "still there?"]

    @pytest.mark.parametrize("text,reason", [
        ("", "empty"), ("   \n\t ", "empty"), ("x" * 101, "too long"), (None, "text"),
    ])
    def test_bad_messages_are_refused_before_anything_is_stored(self, make_manager,
                                                                 text, reason):
        manager = make_manager(MAX_MESSAGE_CHARS=100)
        session = manager.create_session()
        with pytest.raises(MessageRejected, match=reason):
            session.send(text)
        assert manager.get_stats()["total_messages"] == 0

    def test_messages_counts_what_was_sent_and_each_reply_once_tool_steps_and_all(
            self, make_manager):
        manager = make_manager(RATE_LIMIT_PER_MINUTE=0)  # offline: arithmetic is a tool step
        session = manager.create_session()
        assert session.send("what is 12*7") == "12*7 = 84"
        session.send("hello")
        assert manager.store.count_messages() == 6  # rows: 2 + the call and its result
        assert manager.get_stats()["total_messages"] == 4

    def test_control_characters_are_removed_from_messages(self, make_manager):
        session = make_manager().create_session()
        session.send("My name is\x00 Ada\x07.")
        assert session.messages[0].text == "My name is Ada."


class TestCustomAgents:
    def test_a_custom_agent_overrides_the_pool_and_counts_in_stats(self, make_manager):
        manager = make_manager()
        session, other = manager.create_session(), manager.create_session()
        session.agent = AgentSpec("offline-demo", "Be terse.", 0.1)
        assert session.agent is not manager.pool.agents[0]
        assert other.agent is manager.pool.agents[0]
        # counted as sessions are: once the chat has a message
        assert manager.get_stats()["sessions_with_custom_agents"] == 0
        session.send("hello")
        assert manager.get_stats()["sessions_with_custom_agents"] == 1
        session.agent = None
        assert session.agent is manager.pool.agents[0]
        assert manager.get_stats()["sessions_with_custom_agents"] == 0

    def test_any_agent_object_can_be_set_for_this_process(self, make_manager):
        manager = make_manager()
        session = manager.create_session()
        mine = offline_factory()(AgentSpec("offline-demo", "", 0))
        session.agent = mine
        assert session.agent is mine
        assert session.send("2+2") == "2+2 = 4"
        assert manager.get_stats()["sessions_with_custom_agents"] == 1
        assert manager.pool.snapshot()[0]["served"] == 0

    def test_a_custom_agent_spec_survives_a_restart(self, make_manager):
        first = make_manager()
        session = first.create_session()
        spec = AgentSpec("offline-demo", "Be terse.", 0.3)
        session.agent = spec
        again = make_manager().get_session(session.session_id)
        assert again.agent_spec == spec
        assert again.has_custom_agent

    def test_sessions_with_the_same_spec_share_one_built_agent(self, make_manager):
        manager = make_manager()
        spec = AgentSpec("offline-demo", "Same.", 0.5)
        a, b = manager.create_session(), manager.create_session()
        a.agent = spec
        b.agent = spec
        assert a.agent is b.agent


class TestLifecycle:
    def test_session_ids_are_long_random_and_url_safe(self, make_manager):
        manager = make_manager()
        ids = {manager.create_session().session_id for _ in range(200)}
        assert len(ids) == 200
        assert all(is_valid_session_id(i) and len(i) >= 32 for i in ids)

    def test_a_session_without_messages_costs_no_row(self, make_manager):
        manager = make_manager()
        manager.create_session()
        assert manager.store.list_sessions() == []
        stats = manager.get_stats()
        assert (stats["total_sessions"], stats["empty_chats_open"]) == (0, 1)

    def test_history_survives_a_new_manager_on_the_same_database(self, make_manager):
        factory = scripted_factory(ScriptedModel(answer=first_words))
        session = make_manager(agent_factory=factory).create_session()
        session.send("I am Lin.")
        restarted = make_manager(agent_factory=factory)
        again = restarted.get_session(session.session_id)
        assert [m.text for m in again.messages] == [m.text for m in session.messages]
        assert again.send("Who am I?") == "I am Lin. (2)"
        assert restarted.get_stats()["total_sessions"] == 1
        assert restarted.get_stats()["total_messages"] == 4

    def test_a_turn_sees_what_another_manager_wrote_to_the_same_session(self, make_manager):
        model = ScriptedModel()
        here, there = (make_manager(agent_factory=scripted_factory(model)) for _ in "ab")
        session = here.create_session()  # two processes or replicas
        session.send("I am Ada.")
        there.get_session(session.session_id).send("I am Grace.")
        session.send("Who am I?")
        assert [m.text for m in model.history[-1] if isinstance(m, HumanMessage)] == [
            "I am Ada.", "I am Grace.", "Who am I?"]  # what the other one wrote is sent

    def test_idle_sessions_are_evicted_and_reloaded_on_demand(self, make_manager):
        now = [1000.0]
        manager = make_manager(clock=lambda: now[0], SESSION_IDLE_TTL=60,
                               agent_factory=scripted_factory(ScriptedModel(answer=first_words)))
        kept, empty = manager.create_session(), manager.create_session()
        kept.send("I am Ada.")
        now[0] += 61
        assert manager.evict_idle() == 2
        assert manager.sessions_in_memory == 0
        assert manager.get_stats()["total_sessions"] == 1  # the empty one is gone
        again = manager.get_session(kept.session_id)
        assert again is not kept and again.send("Who am I?") == "I am Ada. (2)"
        assert manager.get_session(empty.session_id) is None

    def test_active_sessions_are_chats_with_a_message_used_in_the_last_5_minutes(
            self, make_manager):
        now = [1000.0]
        manager = make_manager(clock=lambda: now[0], SESSION_IDLE_TTL=3600,
                               agent_factory=scripted_factory(ScriptedModel(answer=first_words)))
        earlier = manager.create_session()
        earlier.send("I am Ada.")
        now[0] += 301
        talking, _empty = manager.create_session(), manager.create_session()
        talking.send("I am Grace.")  # an empty chat open in a tab is not a session yet
        stats = manager.get_stats()
        assert (stats["active_sessions"], stats["total_sessions"]) == (1, 2)
        manager.get_session(earlier.session_id)  # reopened
        assert manager.get_stats()["active_sessions"] == 2

    def test_memory_holds_at_most_the_configured_number_of_sessions(self, make_manager):
        manager = make_manager(MAX_SESSIONS_IN_MEMORY=10)
        for _ in range(25):
            manager.create_session()
        assert manager.sessions_in_memory == 10
        assert manager.get_stats()["empty_chats_open"] == 10

    def test_unknown_and_malformed_ids_give_none(self, make_manager):
        manager = make_manager()
        assert manager.get_session("A" * 32) is None
        assert manager.get_session("../../etc/passwd") is None
        assert manager.get_session("") is None

    def test_an_owner_sees_only_their_own_sessions(self, make_manager):
        manager = make_manager()
        mine = manager.create_session(owner="browser-a")
        theirs = manager.create_session(owner="browser-b")
        mine.send("hello")
        theirs.send("hello")
        assert [s["session_id"] for s in manager.list_sessions(owner="browser-a")] == [
            mine.session_id]
        assert manager.get_session(theirs.session_id, owner="browser-a") is None
        assert not manager.delete_session(theirs.session_id, owner="browser-a")
        assert manager.delete_session(mine.session_id, owner="browser-a")
        assert manager.get_stats()["total_sessions"] == 1

    def test_trimming_bounds_what_is_sent_but_storage_keeps_everything(self, make_manager):
        model = ScriptedModel()
        manager = make_manager(agent_factory=scripted_factory(model),
                               HISTORY_MAX_TOKENS=200, RATE_LIMIT_PER_MINUTE=0)
        session = manager.create_session()
        session.send("I am Ada.")
        for i in range(30):
            session.send(f"Filler message number {i} with a few words in it.")
        assert len(session.messages) == 62
        sent = model.history[-1]
        assert len(sent) < 20
        assert isinstance(sent[1], HumanMessage)  # starts on a human after the system
        assert "I am Ada." not in [m.text for m in sent]  # the oldest were trimmed


def test_a_custom_agent_may_use_only_the_models_offered(make_manager):
    """The operator's key pays for a chat's own agent: no model it did not offer."""
    manager = make_manager(OPENAI_API_KEY="sk-test", CHAT_MODEL="gpt-4o-mini")
    session = manager.create_session(owner="ada")
    with pytest.raises(ValueError, match="'o1-pro' is not offered here; choose one of: "
                                         "gpt-4o-mini"):
        session.agent = AgentSpec("o1-pro", "", 0.5)
    assert session.agent_spec is None
    session.agent = AgentSpec("gpt-4o-mini", "Be brief.", 0.5)
    anything = make_manager(OPENAI_API_KEY="sk-test", CUSTOM_MODELS="*")
    anything.create_session().agent = AgentSpec("o1-pro", "", 0.5)


def test_the_pools_model_is_always_offered_and_a_chats_own_model_may_stay(make_manager):
    """CUSTOM_MODELS adds to the pool's model: a chat changing only its prompt is not
    refused; a chat whose model is no longer offered may keep it, not switch to it."""
    manager = make_manager(OPENAI_API_KEY="sk-test", CHAT_MODEL="gpt-4o-mini",
                           CUSTOM_MODELS="gpt-4o")
    assert manager.custom_models() == ("gpt-4o-mini", "gpt-4o")
    session = manager.create_session(owner="ada")
    session.agent = AgentSpec("gpt-4o-mini", "Be brief.", 0.5)  # the pool's own
    session.spec = AgentSpec("legacy-model", "Be brief.", 0.5)  # stored long ago
    session.agent = AgentSpec("legacy-model", "Be terse.", 0.5)  # kept, prompt changed
    with pytest.raises(ValueError, match="not offered"):
        manager.create_session().agent = AgentSpec("legacy-model", "", 0.5)


def test_with_members_a_chats_own_agent_is_offered_chat_model_and_must_build(
        make_manager):
    """Its agent talks to OPENAI_BASE_URL, none of the members': their models are not
    offered, and with no key there a clear refusal, not a traceback."""
    manager = make_manager(MEMBERS=[{"name": "local", "model": "llama3",
                                     "api_key": "sk-local",
                                     "base_url": "http://127.0.0.1:9/v1"}],
                           CHAT_MODEL="gpt-4o-mini")
    assert manager.custom_models() == ("gpt-4o-mini",)
    with pytest.raises(ValueError, match="cannot be built with these settings"):
        manager.create_session().agent = AgentSpec("gpt-4o-mini", "Be brief.", 0.5)


class TestRateLimit:
    def test_a_burst_beyond_the_per_minute_limit_is_refused_then_refills(self, make_manager):
        now = [0.0]
        manager = make_manager(RATE_LIMIT_PER_MINUTE=3, clock=lambda: now[0])
        session = manager.create_session()
        for _ in range(3):
            session.send("hi")
        with pytest.raises(MessageRejected, match="too fast; wait 20 s"):
            session.send("one more")
        assert manager.get_stats()["total_messages"] == 6  # the refused one is not stored
        now[0] += 20
        assert session.send("what is 1+1") == "1+1 = 2"

    def test_a_message_refused_while_another_replica_answers_costs_nothing(
            self, make_manager):
        import time

        from core.ids import new_run_id

        manager = make_manager(RATE_LIMIT_PER_MINUTE=2, clock=lambda: 0.0)
        session = manager.create_session()
        session.send("hi")  # 1 of 2
        sid, run_id = session.session_id, new_run_id()
        started = manager.store.runs.start_turn(
            sid, HumanMessage("tell me a story"),
            run={"id": run_id, "agent": "", "replica": "elsewhere"},
            reply={"model": "offline-demo"}, stale_before=time.time() - 10)
        for _ in range(3):
            with pytest.raises(MessageRejected, match="still being written"):
                session.send("and now?")
        manager.store.runs.finish_turn(sid, run_id, started.reply_id, AIMessage("The end."),
                                       "complete")
        assert session.send("what is 1+1") == "1+1 = 2"  # 2 of 2, not "too fast"

    def test_the_limit_is_per_session_without_an_owner(self, make_manager):
        manager = make_manager(RATE_LIMIT_PER_MINUTE=1, clock=lambda: 0.0)
        first, second = manager.create_session(), manager.create_session()
        first.send("hi")
        second.send("hi")
        with pytest.raises(MessageRejected):
            first.send("again")

    def test_a_browsers_chats_share_one_limit_and_a_regenerate_counts(self, make_manager):
        """A new chat is no fresh allowance, and a regenerate asks the model as a message
        does (30 in a row went through)."""
        now = [0.0]
        manager = make_manager(RATE_LIMIT_PER_MINUTE=3, clock=lambda: now[0])
        first = manager.create_session(owner="browser-a")
        first.send("hi")  # 1 of 3
        list(first.regenerate())  # 2 of 3
        second = manager.create_session(owner="browser-a")
        second.send("hi")  # 3 of 3
        for refused in (lambda: first.send("again"), lambda: list(first.regenerate()),
                        lambda: manager.create_session(owner="browser-a").send("hi")):
            with pytest.raises(MessageRejected, match="too fast"):
                refused()
        assert manager.create_session(owner="browser-b").send("hi")  # not theirs
        now[0] += 20
        list(first.regenerate())


class TestConcurrency:
    def test_hundreds_of_sessions_from_threads_get_their_own_replies(self, make_manager):
        manager = make_manager(pool_size=4, AGENT_MAX_CONCURRENCY=4,
                               agent_factory=scripted_factory(ScriptedModel(answer=first_words)))
        sessions = [manager.create_session() for _ in range(200)]
        replies: dict[str, str] = {}
        barrier = threading.Barrier(20)

        def chat(chunk):
            barrier.wait()
            for i, session in chunk:
                session.send(f"I am User{i}.")
                replies[session.session_id] = session.send("Who am I?")

        work = list(enumerate(sessions))
        threads = [threading.Thread(target=chat, args=(work[k::20],)) for k in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for i, session in enumerate(sessions):
            assert replies[session.session_id] == f"I am User{i}. (2)"
        stats = manager.get_stats()
        assert stats["total_messages"] == 200 * 4
        assert sum(a["served"] for a in stats["pool"]) == 400
        assert stats["pool_in_flight"] == 0

    def test_hundreds_of_sessions_from_asyncio_and_threads_at_once(self, make_manager):
        model = ScriptedModel(answer=first_words, delay=0.001)
        manager = make_manager(agent_factory=scripted_factory(model), pool_size=2,
                               AGENT_MAX_CONCURRENCY=8, AGENT_QUEUE_TIMEOUT=600)
        async_sessions = [manager.create_session() for _ in range(150)]
        thread_sessions = [manager.create_session() for _ in range(50)]
        results: dict[str, str] = {}

        async def one(i, session):
            await session.asend(f"I am Async{i}.")
            results[session.session_id] = await session.asend("Who am I?")

        async def all_async():
            await asyncio.gather(*(one(i, s) for i, s in enumerate(async_sessions)))

        def threaded(i, session):
            session.send(f"I am Thread{i}.")
            results[session.session_id] = session.send("Who am I?")

        threads = [threading.Thread(target=threaded, args=(i, s))
                   for i, s in enumerate(thread_sessions)]
        for thread in threads:
            thread.start()
        asyncio.run(all_async())
        for thread in threads:
            thread.join()
        for i, session in enumerate(async_sessions):
            assert results[session.session_id] == f"I am Async{i}. (2)"
        for i, session in enumerate(thread_sessions):
            assert results[session.session_id] == f"I am Thread{i}. (2)"
        assert manager.get_stats()["total_messages"] == 200 * 4

    def test_async_streaming_matches_sync_streaming(self, make_manager):
        session = make_manager().create_session()

        async def collect():
            return [e async for e in session.astream("what is 6*7")]

        events = asyncio.run(collect())
        assert [type(e) for e in events[:2]] == [ToolCall, ToolResult]
        assert session.messages[-1].text == "6*7 = 42"


class TestEdges:
    def test_a_lone_surrogate_is_cleaned_not_a_crash(self, make_manager):
        session = make_manager().create_session()
        assert session.send("a \ud800 b")  # answered, as any message
        assert session.messages[0].text == "a \ufffd b"

    def test_settings_applied_before_the_first_message_still_get_a_title(self, make_manager):
        manager = make_manager()
        session = manager.create_session(owner="me")
        session.agent = AgentSpec("offline-demo", "Be brief.", 0.3)  # the row exists now
        session.send("Plan a trip to Lisbon")
        (listed,) = manager.list_sessions(owner="me")
        assert listed["title"] == "Plan a trip to Lisbon"

    @pytest.mark.parametrize("first_message, title", [
        ("Plan a trip to Lisbon " * 5,
         "Plan a trip to Lisbon Plan a trip to Lisbon Plan a trip to…"),  # at a word
        ("see https://example.com/" + "a" * 80,
         "see https://example.com/" + "a" * 35 + "…"),  # one long word: cut inside it
    ])
    def test_a_long_first_message_gives_a_title_cut_with_an_ellipsis(
            self, make_manager, first_message, title):
        manager = make_manager()
        manager.create_session(owner="me").send(first_message)
        (listed,) = manager.list_sessions(owner="me")
        assert listed["title"] == title and len(title) <= 60

    def test_renaming_does_not_move_a_chat_to_the_top(self, make_manager):
        manager = make_manager()
        older, newer = manager.create_session(owner="me"), manager.create_session(owner="me")
        older.send("first chat")
        newer.send("second chat")
        manager.rename_session(older, "Renamed")
        assert [s["title"] for s in manager.list_sessions(owner="me")] == ["second chat",
                                                                           "Renamed"]


class TestFeedback:
    def test_feedback_is_stored_per_reply_and_counted_per_model_and_agent(self, make_manager):
        manager = make_manager()
        shared, custom = manager.create_session(), manager.create_session()
        custom.agent = AgentSpec("offline-demo", "Be brief.", 0.3)
        for session in (shared, custom):
            session.send("hello")
        reply = lambda s: manager.store.load_stored(s.session_id)[-1].id  # noqa: E731
        assert manager.set_feedback(shared, reply(shared), 1, "  spot on ")
        assert manager.set_feedback(custom, reply(custom), 0)
        assert manager.store.load_stored(shared.session_id)[-1].comment == "spot on"
        assert manager.store.feedback_by_agent(shared_model="offline-demo") == [
            {"agent": "custom", "model": "offline-demo", "up": 0, "down": 1},
            {"agent": "shared", "model": "offline-demo", "up": 1, "down": 0}]
        assert manager.set_feedback(shared, reply(shared), None)  # cleared
        assert manager.store.load_stored(shared.session_id)[-1].score is None

    def test_feedback_on_an_answer_a_regenerate_replaced_still_counts(self, make_manager):
        """Thumbs down, then Regenerate: the commonest path. The answer goes, its thumb
        stays in the stats (else they under-count exactly the bad answers)."""
        manager = make_manager()
        session = manager.create_session()
        session.send("hello")
        first = manager.store.load_stored(session.session_id)[-1].id
        assert manager.set_feedback(session, first, 0, "Too short")
        list(session.regenerate())
        rows = manager.store.load_stored(session.session_id)
        assert first not in [r.id for r in rows] and len(rows) == 2  # replaced
        assert manager.set_feedback(session, rows[-1].id, 1)
        assert manager.store.feedback_by_agent(shared_model="offline-demo") == [
            {"agent": "shared", "model": "offline-demo", "up": 1, "down": 1}]
        manager.delete_session(session.session_id)  # the user's choice: all of it goes
        assert manager.store.feedback_by_agent() == []

    def test_turning_the_thumb_keeps_the_comment_written(self, make_manager):
        manager = make_manager()
        session = manager.create_session()
        session.send("what is 9*9")
        reply_id = manager.store.load_stored(session.session_id)[-1].id
        manager.set_feedback(session, reply_id, 1, "Very helpful answer")
        manager.set_feedback(session, reply_id, 0)  # the thumb turned, no comment sent
        stored = manager.store.load_stored(session.session_id)[-1]
        assert (stored.score, stored.comment) == (0, "Very helpful answer")
        manager.set_feedback(session, reply_id, 0, "")  # the comment emptied on purpose
        assert manager.store.load_stored(session.session_id)[-1].comment == ""

    def test_feedback_on_another_chats_or_a_users_message_is_refused(self, make_manager):
        manager = make_manager()
        mine, theirs = manager.create_session(), manager.create_session()
        mine.send("hello")
        theirs.send("hello")
        their_reply = manager.store.load_stored(theirs.session_id)[-1].id
        my_question = manager.store.load_stored(mine.session_id)[0].id
        assert not manager.set_feedback(mine, their_reply, 1)
        assert not manager.set_feedback(mine, my_question, 1)
        assert manager.store.feedback_by_agent() == []


class TestBranches:
    """Editing an earlier message forks the conversation; both branches stay. The
    scripted model answers with the first question it was sent and how many it got."""

    @pytest.fixture
    def chat(self, make_manager):
        model = ScriptedModel(answer=first_words)
        manager = make_manager(agent_factory=scripted_factory(model), RATE_LIMIT_PER_MINUTE=0)
        return manager, manager.create_session(), model

    def test_an_edit_answers_the_new_branch_and_sends_only_that_branch(self, chat):
        manager, session, model = chat
        session.send("I am Ada.")
        session.send("Who am I?")
        first = manager.store.load_stored(session.session_id)[0].id
        run = session.edit(first, "I am Grace.")
        assert run.wait(10) and run.reply == "I am Grace. (1)"
        assert session.send("Who am I?") == "I am Grace. (2)"
        assert "Ada" not in str(model.history[-1])  # the model sees the shown branch only
        assert [m.text for m in session.messages] == [
            "I am Grace.", "I am Grace. (1)", "Who am I?", "I am Grace. (2)"]

    def test_the_old_branch_stays_reachable_and_exports_follow_the_shown_one(self, chat):
        manager, session, _ = chat
        session.send("I am Ada.")
        original = manager.store.load_stored(session.session_id)[0].id
        session.edit(original, "I am Grace.").wait(10)
        edited = manager.store.load_stored(session.session_id)[0].id
        assert manager.store.versions(session.session_id, [edited]) == {
            edited: [original, edited]}
        assert manager.choose_branch(session, original)
        assert [m.text for m in session.messages][0] == "I am Ada."
        assert session.send("Who am I?") == "I am Ada. (2)"  # continued on that branch
        from core.export import conversation_json

        exported = conversation_json("t", manager.store.load_stored(session.session_id))
        assert "Ada" in exported and "Grace" not in exported

    def test_regenerate_on_a_branch_keeps_the_other_branch(self, chat):
        manager, session, _ = chat
        session.send("I am Ada.")
        original = manager.store.load_stored(session.session_id)[0].id
        session.edit(original, "I am Grace.").wait(10)
        list(session.regenerate())
        assert [m.text for m in session.messages] == ["I am Grace.", "I am Grace. (1)"]
        manager.choose_branch(session, original)
        assert [m.text for m in session.messages] == ["I am Ada.", "I am Ada. (1)"]

    def test_an_edit_of_another_chats_message_is_refused(self, make_manager):
        manager = make_manager()
        mine, theirs = manager.create_session(), manager.create_session()
        theirs.send("secret")
        their_message = manager.store.load_stored(theirs.session_id)[0].id
        with pytest.raises(MessageRejected):
            mine.edit(their_message, "mine now")
        assert not manager.choose_branch(mine, their_message)
