"""Several replicas on one database: each test runs replicas as separate processes.

Sessions and messages live in the database, so any replica serves any session; pool
utilisation is per replica and published as heartbeats.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import pytest
from langchain_core.messages import HumanMessage

from core import AgentSpec
from core.migrations import MIGRATIONS
from core.replicas import ReplicaReporter
from tests import replica_worker

SPAWN = multiprocessing.get_context("spawn")


@pytest.fixture
def replicas():
    with ProcessPoolExecutor(max_workers=4, mp_context=SPAWN) as pool:
        yield pool


def test_replicas_starting_at_once_migrate_exactly_once(db_url, replicas):
    ran = list(replicas.map(replica_worker.migrate_only, [db_url] * 4))
    # each step ran in exactly one replica: the others found it applied
    assert sorted(name for names in ran for name in names) == sorted(
        m.__name__ for m in MIGRATIONS)


def test_a_chat_started_on_one_replica_continues_on_another(db_url, replicas):
    session_id = replicas.submit(replica_worker.start_chat, db_url,
                                 "I am Lin.").result()
    reply, humans = replicas.submit(replica_worker.continue_chat, db_url, session_id,
                                    "Who am I?").result()
    assert reply == "I am Lin. (2)"  # the other replica sent the whole history
    assert humans == ["I am Lin.", "Who am I?"]


def test_two_replicas_writing_to_one_session_keep_every_message_in_order(db_url, replicas,
                                                                         make_manager):
    manager = make_manager()
    session = manager.create_session()
    session.send("hello")
    with SPAWN.Manager() as sync:
        go = sync.Event()
        writers = [replicas.submit(replica_worker.write_many, db_url, session.session_id,
                                   prefix, 15, go) for prefix in ("A", "B")]
        go.set()
        for writer in writers:
            writer.result(timeout=120)
    humans = [m.text for m in manager.store.load_messages(session.session_id)
              if isinstance(m, HumanMessage)]
    assert len(humans) == 31
    for prefix in ("A", "B"):
        assert [h for h in humans if h.startswith(prefix)] == [f"{prefix}{i}"
                                                                for i in range(15)]
    replies = [m for m in manager.store.load_messages(session.session_id)
               if m.type == "ai" and m.text]
    assert len(replies) == 31


def test_cluster_stats_count_every_replica(db_url, replicas, make_manager):
    jobs = [replicas.submit(replica_worker.serve_and_report, db_url, f"replica-{i}", i + 1)
            for i in range(2)]
    for job in jobs:
        job.result(timeout=120)
    here = make_manager()
    reporter = ReplicaReporter(here, replica_id="observer")
    reporter.publish()
    cluster = {r["replica"]: r for r in reporter.cluster()}
    assert set(cluster) == {"replica-0", "replica-1", "observer"}
    assert cluster["replica-0"]["served"] == 1 and cluster["replica-1"]["served"] == 2
    assert cluster["observer"]["this_replica"]
    stats = here.get_stats()
    # each a question and its reply ("what is 1+1": the tool step is part of the reply)
    assert stats["total_sessions"] == 3 and stats["total_messages"] == 3 * 2


def test_replicas_silent_for_a_day_are_forgotten(make_manager):
    import time

    manager = make_manager()
    ReplicaReporter(manager, replica_id="gone").publish()
    later = ReplicaReporter(manager, replica_id="watcher", clock=lambda: time.time() + 86_401)
    assert later.forget_gone() == 1
    assert manager.store.heartbeats() == []


def test_a_replica_that_stops_reporting_is_marked_stale(make_manager):
    now = [1_000_000.0]
    manager = make_manager()
    quiet = ReplicaReporter(manager, replica_id="quiet", stale_after=30)
    quiet.publish()
    watcher = ReplicaReporter(manager, replica_id="watcher", stale_after=30,
                              clock=lambda: now[0])
    import time
    now[0] = time.time() + 10
    assert not {r["replica"]: r for r in watcher.cluster()}["quiet"]["stale"]
    now[0] = time.time() + 31
    assert {r["replica"]: r for r in watcher.cluster()}["quiet"]["stale"]


class TestRetention:
    def test_only_sessions_idle_past_the_retention_are_deleted(self, make_manager):
        import time

        manager = make_manager(SESSION_RETENTION_DAYS=1)
        old, fresh = manager.create_session(), manager.create_session()
        old.send("old news")
        fresh.send("fresh news")
        assert manager.delete_expired_sessions(now=time.time() + 3600) == 0
        manager.store.update_session(old.session_id, touch=True)  # touched now...
        later = time.time() + 86400 + 60
        fresh_id = fresh.session_id
        manager.store.update_session(fresh_id, updated_at=later)  # ...fresh a day later
        assert manager.delete_expired_sessions(now=later) == 1
        assert manager.store.get_session(old.session_id) is None
        assert manager.store.count_messages(old.session_id) == 0
        assert manager.store.get_session(fresh_id) is not None

    def test_a_session_deleted_under_another_replica_carries_on(self, make_manager):
        here, there = make_manager(), make_manager()
        session = here.create_session()
        session.send("My name is Ada.")
        there.store.delete_session(session.session_id)  # retention ran on another replica
        assert session.send("what is 2+2") == "2+2 = 4"
        assert [m.text for m in session.messages][0] == "what is 2+2"

    def test_a_chat_made_again_after_retention_keeps_its_settings(self, make_manager):
        here, there = make_manager(), make_manager()
        session = here.create_session()
        spec = AgentSpec("offline-demo", "Be terse.", 0.3)
        session.agent = spec
        session.send("My name is Ada.")
        there.store.delete_session(session.session_id)  # retention ran on another replica
        assert session.send("what is 2+2") == "2+2 = 4"
        assert session.agent_spec == spec  # the row made again holds them, as read back
        assert there.get_session(session.session_id).agent_spec == spec
        assert there.get_stats()["sessions_with_custom_agents"] == 1

    def test_retention_zero_keeps_everything(self, make_manager):
        manager = make_manager()
        manager.create_session().send("keep me")
        assert manager.delete_expired_sessions(now=10**12) == 0


def test_a_429_seen_by_one_replica_holds_back_the_others(db_url, replicas, make_manager):
    from tests.fake_openai import FakeOpenAI

    with FakeOpenAI() as fake, SPAWN.Manager() as sync:
        members = [{"name": "shared", "model": "fake-1", "api_key": "sk-1",
                    "base_url": fake.url}]
        ready, cooling = sync.Event(), sync.Event()
        other = replicas.submit(replica_worker.ask_during_a_cooldown, db_url, members,
                                ready, cooling)
        assert ready.wait(60)
        here = make_manager(MEMBERS=members, OPENAI_TIMEOUT=5)
        fake.modes.append("429:6")  # long enough to be seen on a slow machine
        run = here.create_session().start("hello")
        while not fake.requests:
            run.wait(0.01)
        cooling.set()
        reply, seen = other.result(timeout=60)
        assert run.wait(20)
    limited = fake.requests[0]["at"]
    assert reply == run.reply == "Hello from the fake model, all good."
    assert len(fake.requests) == 3
    # the other replica asked during the cooldown, but its request waited it out
    assert seen < fake.requests[0]["wall"] + 6
    assert all(r["at"] >= limited + 5.9 for r in fake.requests[1:])
