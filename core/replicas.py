"""Replicas of the app on one database: each publishes a heartbeat with its pool counters.

Sessions and messages are counted from the database, so they are cluster-wide already;
pool utilisation is per process, so each replica writes a small row every sampling
interval and the stats read them all, marking replicas that stopped reporting.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from core.sessions import ChatbotSessionManager

FORGET_AFTER = 24 * 3600  # rows of replicas gone this long are deleted


class ReplicaReporter:
    """This process's heartbeat, and everyone's, through the shared store."""

    def __init__(self, manager: ChatbotSessionManager, replica_id: str | None = None,
                 stale_after: float | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.manager = manager
        self.replica_id = replica_id or manager.replica_id
        self.stale_after = (manager.settings.HEARTBEAT_STALE_AFTER if stale_after is None
                            else stale_after)
        self._clock = clock
        self.started_at = clock()

    def publish(self, stats: dict[str, Any] | None = None) -> None:
        """Write this replica's row from ``stats`` (the manager's, taken now if not given)."""
        stats = self.manager.get_stats() if stats is None else stats
        self.manager.store.publish_heartbeat(self.replica_id, self.started_at, {
            "pool": stats["pool"], "pool_queued": stats["pool_queued"],
            "sessions_in_memory": stats["sessions_in_memory"],
            "active_sessions": stats["active_sessions"]})

    def forget_gone(self) -> int:
        """Delete rows of replicas silent for FORGET_AFTER (run with the hourly clean-up)."""
        return self.manager.store.forget_replicas_seen_before(self._clock() - FORGET_AFTER)

    def cluster(self) -> list[dict[str, Any]]:
        """Every replica's last report, with ``stale`` set for those that went quiet."""
        now = self._clock()
        replicas = []
        for beat in self.manager.store.heartbeats():
            beat["stale"] = beat["last_seen"] < now - self.stale_after
            beat["this_replica"] = beat["replica"] == self.replica_id
            beat["in_flight"] = sum(a["in_flight"] for a in beat["pool"])
            beat["served"] = sum(a["served"] for a in beat["pool"])
            beat["errors"] = sum(a["errors"] for a in beat["pool"])
            replicas.append(beat)
        return replicas
