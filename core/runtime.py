"""The process-wide manager, owned here rather than by a UI cache that can be cleared."""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable

from core.config import Settings
from core.maintenance import Maintenance
from core.replicas import ReplicaReporter
from core.sessions import ChatbotSessionManager
from core.stats import StatsRecorder

# Young-generation collections every 10,000 allocations instead of Python's 700.
GC_THRESHOLDS = (10_000, 10, 10)

_lock = threading.Lock()
_manager: ChatbotSessionManager | None = None
_recorder: StatsRecorder | None = None
_maintenance: Maintenance | None = None


def shared_manager(load: Callable[[], Settings]) -> ChatbotSessionManager:
    """Build the manager on first use (settings from ``load``) and return it ever after.

    Its stats recorder starts sampling, and its hourly maintenance, in the background.
    """
    global _manager, _recorder, _maintenance
    with _lock:
        if _manager is None:
            manager = ChatbotSessionManager(settings=load())
            reporter = ReplicaReporter(manager)
            _recorder = StatsRecorder(manager, reporter=reporter)
            _recorder.start()
            _maintenance = Maintenance(manager, reporter)
            _maintenance.start()
            _manager = manager
            settle_garbage_collector()
        return _manager


def settle_garbage_collector() -> None:
    """Tune Python's cyclic garbage collector for a server with many turns in flight.

    What start-up built (LangChain, Streamlit, the pool: ~180k objects) lives as long as
    the process: frozen, full collections stop walking it. With hundreds of turns in
    flight, their objects survive young collections and fill the older generations,
    which then get collected often; a larger young threshold makes all of it rarer.
    The bench compares this with Python's defaults in the same run (README). The cost:
    a cycle among objects alive at the first call that later becomes garbage is never
    collected; that is bounded by what existed once, at start-up.
    """
    if not gc.get_freeze_count():  # once: a rebuilt manager must not freeze its garbage
        gc.collect()
        gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def shared_recorder() -> StatsRecorder | None:
    """The shared manager's stats recorder, once the manager exists."""
    return _recorder


def reset_shared_manager() -> None:
    """Stop sampling, close and forget the manager (tests, and a clean shutdown)."""
    global _manager, _recorder, _maintenance
    with _lock:
        if _recorder is not None:
            _recorder.stop()
        if _maintenance is not None:
            _maintenance.stop()
        if _manager is not None:
            _manager.close()
        _manager, _recorder, _maintenance = None, None, None
