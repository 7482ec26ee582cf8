"""Hourly housekeeping deletes what the retention policy says, and nothing else."""

import time

from sqlalchemy import update

from core.maintenance import Maintenance
from core.replicas import ReplicaReporter
from core.schema import replicas


def test_a_clean_up_deletes_expired_conversations_and_long_gone_replicas(make_manager):
    manager = make_manager(SESSION_RETENTION_DAYS=1)
    old, fresh = manager.create_session(), manager.create_session()
    old.send("old news")
    fresh.send("fresh news")
    manager.store.update_session(old.session_id, updated_at=time.time() - 2 * 86400)
    manager.store.publish_heartbeat("gone", 0, {"pool": []})
    with manager.store.engine.begin() as conn:  # its last heartbeat, three days ago
        conn.execute(update(replicas).values(last_seen=time.time() - 3 * 86400))
    here = ReplicaReporter(manager, replica_id="here")
    here.publish()
    done = Maintenance(manager, here).run_once()
    assert done == {"sessions": 1, "replicas": 1}
    assert [s["session_id"] for s in manager.list_sessions()] == [fresh.session_id]
    assert [r["replica"] for r in here.cluster()] == ["here"]


def test_it_runs_in_the_background_until_stopped(make_manager):
    maintenance = Maintenance(make_manager(), interval=3600)
    maintenance.start()
    assert maintenance.running
    maintenance.stop()
    assert not maintenance.running
