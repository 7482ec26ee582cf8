"""A job run every few seconds in a daemon thread, until stopped."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger("poolchat")


class Periodic:
    """Calls ``job`` now, then every ``interval`` seconds; a failure is logged and the
    next call happens as planned (a database outage must not end it)."""

    def __init__(self, job: Callable[[], object], interval: float, name: str) -> None:
        self.job, self.interval, self.name = job, interval, name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Starting twice is a no-op."""
        if self.running:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.job()
            except Exception:  # noqa: BLE001 - logged; the next run is as planned
                log.warning("%s failed; next try in %s s", self.name, self.interval)
            self._stop.wait(self.interval)
