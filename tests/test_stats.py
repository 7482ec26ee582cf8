"""Stats: a bounded ring buffer of aggregate samples, safe to show to anyone."""

import json
import time

from core.agents import AgentSpec
from core.stats import StatsRecorder, pool_series, public_stats, session_series


def test_the_recorder_keeps_only_the_newest_samples(make_manager):
    manager = make_manager()
    recorder = StatsRecorder(manager, capacity=5)
    for _ in range(12):
        recorder.sample()
    assert len(recorder.samples()) == 5 == recorder.capacity


def test_samples_follow_sessions_messages_and_custom_agents(make_manager):
    manager = make_manager()
    clock = iter(range(100, 200))
    recorder = StatsRecorder(manager, clock=lambda: next(clock))
    recorder.sample()
    session = manager.create_session()
    session.send("hi")
    session.agent = AgentSpec("offline-demo", "terse", 0.1)
    recorder.sample()
    rows = session_series(recorder.samples())
    assert rows == [
        {"time": 100, "total": 0, "active (5 min)": 0, "custom agents": 0},
        {"time": 101, "total": 1, "active (5 min)": 1, "custom agents": 1},
    ]


def test_pool_series_reports_per_interval_requests_and_mean_wait():
    def sample(t, served, wait, errors, in_flight=1):
        return {"time": t, "pool": [{"agent": 0, "in_flight": in_flight,
                                     "max_concurrency": 4, "served": served,
                                     "errors": errors, "queue_wait_seconds": wait}]}

    rows = pool_series([sample(0, 10, 1.0, 0), sample(5, 14, 1.2, 1, in_flight=2)])
    assert rows == [{"time": 5, "agent": "agent 0", "utilisation": 0.5, "requests": 4,
                     "errors": 1, "queue_wait_ms": 50.0}]


def test_public_stats_hold_no_message_text_and_no_session_ids(make_manager):
    manager = make_manager()
    recorder = StatsRecorder(manager)
    session = manager.create_session(owner="browser-xyz")
    session.send("My secret is swordfish")
    recorder.sample()
    recorder.sample()
    dumped = json.dumps(public_stats(manager, recorder))
    assert "swordfish" not in dumped
    assert session.session_id not in dumped and "browser-xyz" not in dumped
    for key in ("total_sessions", "total_messages", "agent_pool_size",
                "sessions_with_custom_agents", "usage", "series"):
        assert key in dumped


def test_the_background_recorder_samples_until_stopped(make_manager):
    recorder = StatsRecorder(make_manager(), interval=0.01)
    recorder.start()
    recorder.start()  # idempotent
    deadline = time.monotonic() + 30
    while len(recorder.samples()) < 3:
        assert time.monotonic() < deadline, "the recorder took no samples"
        time.sleep(0.01)  # polling a background thread's progress
    recorder.stop()
    count = len(recorder.samples())
    assert not recorder.running
    assert len(recorder.samples()) == count
