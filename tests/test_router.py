"""The pool as a router, against the local OpenAI-compatible server: one 429 holds back
every session, a failing member is skipped, a refused key is marked, owners share fairly."""

from __future__ import annotations

import socket
import statistics
import threading
import time

import pytest

from core import AgentSpec
from core.router import DEFAULT_COOLDOWN, MAX_COOLDOWN, retry_after
from sqlalchemy import select

from core.schema import COMPLETE, usage
from core.stats import public_stats
from tests.fake_openai import FakeOpenAI
from tests.fakes import ScriptedModel, scripted_factory

REPLY = "Hello from the fake model, all good."


@pytest.fixture
def fakes():
    with FakeOpenAI() as one, FakeOpenAI() as two:
        yield one, two


def member(name, url, key="sk-one", **extra):
    return {"name": name, "model": "fake-1", "api_key": key, "base_url": url, **extra}


def routed(make_manager, *members, **settings):
    return make_manager(MEMBERS=list(members), OPENAI_TIMEOUT=10, RATE_LIMIT_PER_MINUTE=0,
                        **settings)


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"  # nothing listens: connections are refused


def test_one_429_makes_every_session_wait_and_one_request_probes(make_manager, fakes):
    fake, _ = fakes
    manager = routed(make_manager, member("only", fake.url))
    fake.modes.append("429:2")
    first = manager.create_session().start("hello")
    deadline = time.monotonic() + 10
    while (place := manager.queue_place(first)) is None or not place.cooldown:
        assert time.monotonic() < deadline, "the 429 never put the run back in the queue"
        first.wait(0.01)
    assert first.status == "running"  # the 429 answered, the run waits out the cooldown
    runs = [manager.create_session().start("hello") for _ in range(20)]
    for run in [first, *runs]:
        assert run.wait(20)
    assert [run.status for run in [first, *runs]] == [COMPLETE] * 21
    assert {run.reply for run in [first, *runs]} == {REPLY}
    limited_at = fake.requests[0]["at"]
    during = [r for r in fake.requests if r["at"] < limited_at + 1.95]
    assert len(during) <= 2  # the 429 itself, and not one of the 21 waiting requests
    probe, *rest = fake.requests[1:]
    assert len(rest) == 20 and min(r["at"] for r in rest) >= probe["at"]  # one goes first
    assert manager.get_stats()["pool"][0]["state"] == "healthy"


@pytest.mark.parametrize("failure", ["500", "refused"])
def test_a_failing_member_is_retried_once_on_another(make_manager, fakes, failure):
    fake, spare = fakes
    url = closed_port_url() if failure == "refused" else fake.url
    fake.modes.append("500")
    manager = routed(make_manager, member("first", url), member("spare", spare.url))
    session = manager.create_session()
    assert session.send("hello") == REPLY
    assert len(spare.requests) == 1
    pool = {m["name"]: m for m in manager.get_stats()["pool"]}
    assert pool["first"]["errors"] == 1 and pool["spare"]["errors"] == 0
    assert manager.store.runs.latest_run(session.session_id)["agent"] == "spare"


def test_a_member_failing_again_and_again_is_skipped_and_the_view_says_why(make_manager,
                                                                          fakes):
    _, spare = fakes
    manager = routed(make_manager, member("gone", closed_port_url()),
                     member("spare", spare.url, key="sk-two"))
    sessions = [manager.create_session() for _ in range(6)]  # half of them at home there
    assert [s.send("hello") for s in sessions] == [REPLY] * 6  # each failed over
    gone = manager.get_stats()["pool"][0]
    assert (gone["state"], gone["failing_for"]) == ("failing", "errors: connection failed")
    assert gone["errors"] == 3 and len(spare.requests) == 6


def test_a_failure_while_the_other_member_is_busy_is_retried_at_once(make_manager, fakes):
    """The retry does not wait for the busy member while the one that failed is free
    (it waited the queue's 30 s, then said that all members were busy)."""
    first, spare = fakes
    manager = routed(make_manager, member("first", first.url, max_concurrency=1),
                     member("spare", spare.url, key="sk-two", max_concurrency=1))
    asker, holder = manager.create_session(), manager.create_session()  # homes: first, spare
    spare.modes.append("stall")
    held = holder.start("hello")
    while not spare.requests:
        assert held.wait(0.01) is False, "the spare's reply should stall"
    first.modes.append("500")
    try:
        run = asker.start("hello")
        assert run.wait(5), "the retry waited for the busy member"
        assert (run.status, run.reply) == (COMPLETE, REPLY)
        assert [r["mode"] for r in first.requests] == ["500", "ok"]
        pool = {m["name"]: m for m in manager.get_stats()["pool"]}
        assert pool["first"]["errors"] == 1 and pool["spare"]["in_flight"] == 1
    finally:
        spare.proceed.set()
    assert held.wait(10) and held.reply == REPLY


def test_429s_that_pass_the_request_on_to_another_member_spend_no_retry(make_manager,
                                                                       fakes):
    """Each member may ask to slow down ``OPENAI_MAX_RETRIES`` times: two members with
    keys of their own, each refusing twice, are waited out (the budget went on the first
    two 429s, a few milliseconds apart, and the third was the user's error)."""
    one, two = fakes
    manager = routed(make_manager, member("one", one.url), member("two", two.url,
                                                                  key="sk-two"),
                     OPENAI_MAX_RETRIES=2)
    one.modes.extend(["429:0.2", "429:0.2"])
    two.modes.extend(["429:0.2", "429:0.2"])
    assert manager.create_session().send("hello") == REPLY
    assert len(one.requests) + len(two.requests) == 5  # four 429s, then the answer


def test_a_member_whose_key_is_refused_is_marked_failing_and_skipped(make_manager, fakes):
    fake, spare = fakes
    fake.keys = {"sk-right"}
    manager = routed(make_manager, member("wrong-key", fake.url, key="sk-wrong"),
                     member("spare", spare.url))
    sessions = [manager.create_session() for _ in range(4)]
    assert [s.send("hello") for s in sessions] == [REPLY] * 4
    assert len(fake.requests) == 1  # refused once, then skipped
    states = {m["name"]: m["state"] for m in manager.get_stats()["pool"]}
    assert states == {"wrong-key": "failing", "spare": "healthy"}
    wrong = manager.get_stats()["pool"][0]  # why, and for how long it is skipped
    assert wrong["failing_for"] == "key refused" and 290 < wrong["cooldown_seconds"] <= 300
    manager.members.reconfigure("wrong-key", AgentSpec("fake-2", "", 0.5))  # same key
    assert manager.create_session().send("hello") == REPLY
    assert len(fake.requests) == 1  # still skipped: a new model is no new key
    assert manager.get_stats()["pool"][0]["state"] == "failing"


def test_members_share_the_load_by_weight(make_manager, fakes):
    one, two = fakes
    manager = routed(make_manager, member("heavy", one.url, weight=3, max_concurrency=8),
                     member("light", two.url, weight=1, max_concurrency=8))
    held = []
    for _ in range(8):  # hold leases: the least busy relative to weight gets each
        lease = manager.pool.lease()
        held.append((lease, lease.__enter__()))
    counts = [m["in_flight"] for m in manager.get_stats()["pool"]]
    for context, _ in held:
        context.__exit__(None, None, None)
    assert counts == [6, 2]


def test_at_low_load_conversations_are_shared_by_weight_too(make_manager, fakes):
    one, two = fakes
    manager = routed(make_manager, member("light", one.url, weight=1),
                     member("heavy", two.url, weight=2))
    for _ in range(9):  # one at a time: nobody is ever busy
        manager.create_session().send("hello")
    assert (len(one.requests), len(two.requests)) == (3, 6)


def test_one_owner_flooding_does_not_hold_back_the_others(make_manager):
    gate = threading.Event()  # the first two flood turns hold both slots until it opens
    model = ScriptedModel(answer=lambda _: "done", delay=0.3, gate=gate)
    manager = make_manager(agent_factory=scripted_factory(model), AGENT_POOL_SIZE=1,
                           AGENT_MAX_CONCURRENCY=2, MAX_RUNS_PER_USER=2,
                           RATE_LIMIT_PER_MINUTE=0)
    flood = [manager.create_session(owner="flood").start("go") for _ in range(40)]
    while manager.pool.queued() < 38:  # however slowly the 40 starts were stored
        flood[0].wait(0.01)
    late = [manager.create_session(owner=f"user{i}").start("go") for i in range(5)]
    while (place := manager.queue_place(late[-1])) is None:  # queued on the worker
        late[-1].wait(0.01)
    assert place.position == 6  # one flood turn and four latecomers ahead, not 38
    gate.set()
    ends: dict[str, float] = {}
    for run in [*late, *flood]:
        assert run.wait(60) and run.status == COMPLETE
        ends[run.id] = run.finished_at
    flood_ends = sorted(ends[r.id] for r in flood)
    for run in late:
        assert sum(end < ends[run.id] for end in flood_ends) <= 8  # FIFO: all 38 or more
    assert statistics.median(ends[r.id] for r in late) < flood_ends[10]
    assert manager.pool.held("flood") == 0 and manager.pool.queued() == 0


def test_stopping_a_reply_that_waits_in_the_queue_frees_its_place(make_manager):
    model = ScriptedModel(answer=lambda _: "done")
    model.enqueue("slow", pause_after=0, pause=30)  # holds the only slot until stopped
    manager = make_manager(agent_factory=scripted_factory(model), AGENT_MAX_CONCURRENCY=1,
                           RATE_LIMIT_PER_MINUTE=0)
    holder = manager.create_session(owner="a")
    holder_run = holder.start("first")
    waiting = manager.create_session(owner="b")
    run = waiting.start("second")
    while manager.queue_place(run) is None:
        run.wait(0.01)
    assert waiting.stop()
    assert run.status == "stopped" and manager.pool.queued() == 0
    assert [m.type for m in waiting.messages] == ["human"]  # kept; no empty reply row
    assert holder.stop() and holder_run.status == "stopped"
    assert waiting.send("again") == "done"  # nothing leaked: the slot serves again
    assert manager.pool.members[0].in_flight == 0


@pytest.mark.parametrize("headers,seconds", [
    ({"retry-after": "2"}, 2.0),
    ({"retry-after-ms": "1500"}, 1.5),
    ({"retry-after": "Thu, 26 Nov 2026 00:00:10 GMT"}, 10.0),
    ({"x-ratelimit-reset-requests": "1s", "x-ratelimit-reset-tokens": "2m0s"}, 120.0),
    ({"x-ratelimit-reset-tokens": "20ms"}, 0.02),
    ({}, DEFAULT_COOLDOWN),
    ({"retry-after": "soon"}, DEFAULT_COOLDOWN),
    ({"retry-after": "99999"}, MAX_COOLDOWN),
])
def test_the_cooldown_follows_what_the_provider_asked(headers, seconds):
    import datetime

    import httpx
    import openai

    request = httpx.Request("POST", "http://127.0.0.1/v1/chat/completions")
    error = openai.RateLimitError("slow down", body=None, response=httpx.Response(
        429, request=request, headers=headers))
    now = datetime.datetime(2026, 11, 26, tzinfo=datetime.UTC)
    assert retry_after(error, now) == pytest.approx(seconds)


def test_a_request_queued_while_the_429_was_coming_waits_out_the_cooldown(make_manager,
                                                                         fakes):
    fake, _ = fakes
    manager = routed(make_manager, member("only", fake.url, max_concurrency=1))
    fake.modes.append("429:2:1.5")  # the provider takes 1.5 s to say "wait 2 s"
    first = manager.create_session().start("hello")
    while not fake.requests:
        first.wait(0.01)
    second = manager.create_session().start("hello")
    while manager.pool.queued() < 1:  # queued behind the request that will get the 429
        second.wait(0.01)
    assert first.wait(20) and second.wait(20)
    assert first.reply == second.reply == REPLY
    limited = fake.requests[0]["at"] + 1.5
    assert all(r["at"] >= limited + 1.95 for r in fake.requests[1:])


def test_a_429_after_a_tool_step_still_holds_everyone_back(make_manager, fakes):
    fake, _ = fakes
    manager = routed(make_manager, member("only", fake.url))
    fake.modes.extend(["ok", "429:3"])  # the tool call goes through, the answer is refused
    run = manager.create_session().start("what is 2+3")
    assert run.wait(10) and run.status == "interrupted" and "rate-limiting" in run.error
    pool = manager.get_stats()["pool"][0]
    assert pool["state"] == "cooling down" and pool["rate_limited"] == 1
    assert pool["errors"] == 0  # the provider's limit, not the member's fault


def test_a_chats_own_agent_waits_out_the_pools_429_too(make_manager, fakes):
    """It uses the same provider account: a custom agent hammering through a cooldown
    would multiply the limit as much as a pool agent."""
    from core.agents import AgentSpec

    fake, _ = fakes
    manager = make_manager(OPENAI_API_KEY="sk-one", OPENAI_BASE_URL=fake.url,
                           CHAT_MODEL="fake-1", OPENAI_TIMEOUT=10, RATE_LIMIT_PER_MINUTE=0)
    fake.modes.append("429:2")
    first = manager.create_session().start("hello")
    while (place := manager.queue_place(first)) is None or not place.cooldown:
        first.wait(0.01)
    custom = manager.create_session(owner="ada")
    custom.agent = AgentSpec("fake-1", "Be brief.", 0.2)
    run = custom.start("hello")
    while manager.queue_place(run) is None:  # it waits in the queue, like anyone
        run.wait(0.01)
    assert run.wait(20) and first.wait(20)
    assert (run.status, run.reply) == (COMPLETE, REPLY)
    limited_at = fake.requests[0]["at"]
    assert [r for r in fake.requests if r["at"] < limited_at + 1.95] == fake.requests[:1]
    assert fake.requests[-1]["body"]["messages"][0]["content"] == "Be brief."


def test_a_chats_own_agent_counts_against_its_browsers_slots(make_manager):
    gate = threading.Event()
    model = ScriptedModel(answer=lambda _: "done", gate=gate)
    manager = make_manager(agent_factory=scripted_factory(model), AGENT_MAX_CONCURRENCY=4,
                           MAX_RUNS_PER_USER=1, RATE_LIMIT_PER_MINUTE=0)
    from core.agents import AgentSpec

    shared = manager.create_session(owner="ada")
    held = shared.start("first")
    while manager.pool.held("ada") < 1:
        held.wait(0.01)
    own = manager.create_session(owner="ada")
    own.agent = AgentSpec("offline-demo", "Be brief.", 0.2)
    waiting = own.start("second")
    while manager.queue_place(waiting) is None:  # one slot per browser: it waits
        waiting.wait(0.01)
    assert manager.pool.held("ada") == 1
    gate.set()
    assert held.wait(20) and waiting.wait(20)
    assert (waiting.status, waiting.reply) == (COMPLETE, "done")
    assert manager.pool.held("ada") == 0 and manager.pool.members[0].in_flight == 0
    # the member's figures are its own agent's, as its latency and usage are
    assert manager.pool.members[0].served == 1


def told_to_wait(manager, run, within=10.0):
    """Wait until the run waits in the queue for a provider's cooldown (and is told)."""
    deadline = time.monotonic() + within
    while (place := manager.queue_place(run)) is None or not place.cooldown:
        assert time.monotonic() < deadline, "the run was never told to wait a cooldown"
        assert not run.wait(0.01), f"the run ended instead: {run.status} {run.error}"


def test_a_chats_own_settings_beside_members_wait_out_their_endpoints_429(make_manager,
                                                                         fakes):
    """Their agent talks to OPENAI_BASE_URL, none of the members: its 429 holds back
    every chat with settings of its own there, and the waiting user is told so, instead
    of its client retrying in silence (and the wait counting as time to first token)."""
    members_fake, own_fake = fakes
    manager = routed(make_manager, member("alpha", members_fake.url),
                     OPENAI_API_KEY="sk-own", OPENAI_BASE_URL=own_fake.url, CHAT_MODEL="fake-2")
    own_fake.modes.append("429:2")
    first = manager.create_session(owner="ada")
    first.agent = AgentSpec("fake-2", "Be brief.", 0.2)
    run = first.start("hello")
    told_to_wait(manager, run)
    other = manager.create_session(owner="bo")
    other.agent = AgentSpec("fake-2", "Be brief.", 0.2)
    waiting = other.start("hello")
    told_to_wait(manager, waiting)  # the other chat on that endpoint waits it out too
    queue = public_stats(manager)["own_settings"]  # in /api/stats.json, as the pool
    assert (queue["name"], queue["state"], queue["queued"]) == (
        "own settings", "cooling down", 2)
    assert queue["cooldown_seconds"] > 0 and queue["rate_limited"] == 1
    pool_chat = manager.create_session().start("hello")
    for each in (run, waiting, pool_chat):
        assert each.wait(20)
    queue = manager.get_stats()["own_settings"]
    assert (queue["state"], queue["queued"], queue["in_flight"], queue["served"]) == (
        "healthy", 0, 0, 3)
    assert [r.status for r in (run, waiting, pool_chat)] == [COMPLETE] * 3
    limited_at = own_fake.requests[0]["at"]
    assert [r for r in own_fake.requests if r["at"] < limited_at + 1.95] == \
        own_fake.requests[:1]  # no client retry, nobody else during the cooldown
    assert len(own_fake.requests) == 3 and len(members_fake.requests) == 1
    with manager.store.engine.connect() as conn:
        ttft, queued = conn.execute(select(usage.c.ttft, usage.c.queue_seconds).where(
            usage.c.run_id == run.id, usage.c.status == COMPLETE)).one()
    assert ttft < 1.5 <= queued  # the cooldown is a wait in the queue, not the model's


def test_a_429_on_a_member_holds_back_own_settings_on_the_same_account(make_manager,
                                                                      fakes):
    fake, _ = fakes
    manager = routed(make_manager, member("alpha", fake.url, key="sk-same"),
                     OPENAI_API_KEY="sk-same", OPENAI_BASE_URL=fake.url, CHAT_MODEL="fake-2")
    fake.modes.append("429:2")
    first = manager.create_session().start("hello")
    told_to_wait(manager, first)
    own = manager.create_session(owner="ada")
    own.agent = AgentSpec("fake-2", "Be brief.", 0.2)
    run = own.start("hello")
    told_to_wait(manager, run)  # the same provider account: the same cooldown
    assert run.wait(20) and first.wait(20)
    assert (run.status, first.status) == (COMPLETE, COMPLETE)
    limited_at = fake.requests[0]["at"]
    assert [r for r in fake.requests if r["at"] < limited_at + 1.95] == fake.requests[:1]


@pytest.mark.parametrize("beside_members", [True, False])
def test_settings_reset_while_a_chats_own_agent_waits_out_a_429_keep_that_answer(
        make_manager, fakes, beside_members):
    """The request was made with the chat's own settings: it is answered with them after
    the cooldown, as asked (it failed with a KeyError: the answer looked the settings up
    again, and found the shared pool's, by the custom agent's label)."""
    members_fake, own_fake = fakes
    if beside_members:
        manager = routed(make_manager, member("alpha", members_fake.url),
                         OPENAI_API_KEY="sk-own", OPENAI_BASE_URL=own_fake.url,
                         CHAT_MODEL="fake-2")
    else:
        manager = make_manager(OPENAI_API_KEY="sk-own", OPENAI_BASE_URL=own_fake.url,
                               CHAT_MODEL="fake-2", OPENAI_TIMEOUT=10,
                               RATE_LIMIT_PER_MINUTE=0)
    own_fake.modes.append("429:2")
    chat = manager.create_session(owner="ada")
    chat.agent = AgentSpec("fake-2", "Be brief.", 0.2)
    run = chat.start("hello")
    told_to_wait(manager, run)
    chat.agent = None  # back to the shared agent while the request waits
    assert run.wait(20)
    assert (run.status, run.reply, run.error) == (COMPLETE, REPLY, None)
    assert [r["mode"] for r in own_fake.requests] == ["429:2", "ok"]
    assert own_fake.requests[-1]["body"]["messages"][0]["content"] == "Be brief."
    stored = manager.store.load_stored(chat.session_id)
    assert (stored[-1].model, stored[-1].custom_agent) == ("fake-2", True)


def test_beside_members_a_chats_own_agent_may_not_take_a_members_model(make_manager,
                                                                      fakes):
    """Not offered (CHAT_MODEL and CUSTOM_MODELS are): the member's model was let
    through as if the chat already had it."""
    members_fake, own_fake = fakes
    manager = routed(make_manager, member("alpha", members_fake.url),
                     OPENAI_API_KEY="sk-own", OPENAI_BASE_URL=own_fake.url, CHAT_MODEL="fake-2")
    chat = manager.create_session()
    with pytest.raises(ValueError, match="not offered here; choose one of: fake-2"):
        chat.agent = AgentSpec("fake-1", "Be brief.", 0.2)
    assert manager.settings_offered(chat).model == "fake-2"
