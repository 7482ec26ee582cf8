"""Stats over time: a bounded ring buffer of samples, filled by a background thread.

Samples hold aggregates only (counts and pool counters), never message text or session
ids, so they are safe to chart, download and serve for monitoring. Memory is flat: the
buffer keeps the newest ``capacity`` samples.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from core.periodic import Periodic
from core.replicas import ReplicaReporter
from core.sessions import ChatbotSessionManager

DEFAULT_INTERVAL = 5.0
DEFAULT_CAPACITY = 720  # one hour at the default interval


class StatsRecorder:
    """Samples ``manager.get_stats()`` every ``interval`` seconds; thread-safe.

    With a ``reporter`` each sample is also published as this replica's heartbeat.
    """

    def __init__(self, manager: ChatbotSessionManager, interval: float = DEFAULT_INTERVAL,
                 capacity: int = DEFAULT_CAPACITY, reporter: ReplicaReporter | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.manager = manager
        self.reporter = reporter
        self.interval = interval
        self._clock = clock
        self._samples: deque[dict[str, Any]] = deque(maxlen=capacity)
        self._lock = threading.Lock()
        self._loop = Periodic(self.sample, interval, "poolchat-stats")

    @property
    def capacity(self) -> int:
        return self._samples.maxlen or 0

    def sample(self) -> dict[str, Any]:
        """Take one sample now and keep it."""
        stats = self.manager.get_stats()
        sample = {
            "time": self._clock(),
            "total_sessions": stats["total_sessions"],
            "active_sessions": stats["active_sessions"],
            "custom_sessions": stats["sessions_with_custom_agents"],
            "total_messages": stats["total_messages"],
            "pool": [{k: a[k] for k in ("agent", "name", "in_flight", "max_concurrency",
                                         "served", "errors", "queue_wait_seconds")}
                     for a in stats["pool"]],
        }
        with self._lock:
            self._samples.append(sample)
        if self.reporter is not None:
            self.reporter.publish(stats)
        return sample

    def samples(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._samples)

    @property
    def running(self) -> bool:
        return self._loop.running

    def start(self) -> None:
        """Sample in a daemon thread until ``stop()``; starting twice is a no-op."""
        self._loop.start()

    def stop(self) -> None:
        self._loop.stop()


def session_series(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows for the sessions chart: time, total, active, with custom agents."""
    return [{"time": s["time"], "total": s["total_sessions"], "active (5 min)":
             s["active_sessions"], "custom agents": s["custom_sessions"]} for s in samples]


def pool_series(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows per agent and sample: utilisation, requests, mean queue wait, errors.

    Requests, waits and errors are per interval (differences of the cumulative counters).
    """
    rows = []
    for before, after in zip(samples, samples[1:]):
        for old, new in zip(before["pool"], after["pool"]):
            served = new["served"] - old["served"]
            waited = new["queue_wait_seconds"] - old["queue_wait_seconds"]
            rows.append({
                "time": after["time"], "agent": new.get("name", f"agent {new['agent']}"),
                "utilisation": new["in_flight"] / new["max_concurrency"],
                "requests": max(served, 0), "errors": max(new["errors"] - old["errors"], 0),
                "queue_wait_ms": round(waited / served * 1000, 3) if served > 0 else 0.0,
            })
    return rows


def member_rows(pool: list[dict[str, Any]], usage: dict[str, dict[str, Any]]
                ) -> list[dict[str, Any]]:
    """The live pool view: each member's state and load with its latency and tokens."""
    rows = []
    for member in pool:
        used = usage.get(member["name"], {})
        rows.append({
            "member": member["name"], "model": member["model"],
            "version": member["version"], "state": member["state"],
            "cooldown_s": member["cooldown_seconds"], "failing_for": member["failing_for"],
            "in_flight": f"{member['in_flight']} / {member['max_concurrency']}",
            "weight": member["weight"], "served": member["served"],
            "errors": member["errors"], "rate_limited": member["rate_limited"],
            "ttft_p50_s": used.get("ttft_p50"), "ttft_p95_s": used.get("ttft_p95"),
            "total_p50_s": used.get("total_p50"), "total_p95_s": used.get("total_p95"),
            "tokens_per_min": used.get("tokens_per_minute", 0),
        })
    return rows


def public_stats(manager: ChatbotSessionManager, recorder: StatsRecorder | None = None,
                 usage_max_age: float = 0.0) -> dict[str, Any]:
    """Everything the stats page and /api/stats.json show: aggregates only."""
    stats = manager.get_stats()
    stats["usage"] = manager.store.usage_by_agent(shared_model=manager.default_spec.model)
    stats["feedback"] = manager.store.feedback_by_agent(shared_model=manager.default_spec.model)
    report = manager.get_usage(usage_max_age)
    stats["members"] = member_rows(stats["pool"], report.get("member", {}))
    stats["token_usage"] = report
    if recorder is not None and recorder.reporter is not None:
        stats["replicas"] = recorder.reporter.cluster()
    if recorder is not None:
        samples = recorder.samples()
        stats["series"] = {"sessions": session_series(samples), "pool": pool_series(samples)}
        stats["sample_interval_seconds"] = recorder.interval
    stats["generated_at"] = time.time()
    return stats
