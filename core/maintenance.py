"""Hourly housekeeping: the retention policy and forgetting replicas long gone."""

from __future__ import annotations

from core.periodic import Periodic
from core.replicas import ReplicaReporter
from core.sessions import ChatbotSessionManager

CLEANUP_EVERY = 3600.0  # seconds between clean-ups


class Maintenance:
    """Deletes conversations idle past SESSION_RETENTION_DAYS and the rows of replicas
    silent for a day; once at start, then every ``interval`` seconds."""

    def __init__(self, manager: ChatbotSessionManager, reporter: ReplicaReporter | None = None,
                 interval: float = CLEANUP_EVERY) -> None:
        self.manager, self.reporter = manager, reporter
        self._loop = Periodic(self.run_once, interval, "poolchat-maintenance")

    def run_once(self) -> dict[str, int]:
        """One clean-up now; returns how many of each were deleted."""
        done = {"sessions": self.manager.delete_expired_sessions(), "replicas": 0}
        if self.reporter is not None:
            done["replicas"] = self.reporter.forget_gone()
        return done

    @property
    def running(self) -> bool:
        return self._loop.running

    def start(self) -> None:
        self._loop.start()

    def stop(self) -> None:
        self._loop.stop()
