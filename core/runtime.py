"""The process-wide manager, owned here rather than by a UI cache that can be cleared."""

from __future__ import annotations

import threading
from collections.abc import Callable

from core.config import Settings
from core.sessions import ChatbotSessionManager

_lock = threading.Lock()
_manager: ChatbotSessionManager | None = None


def shared_manager(load: Callable[[], Settings]) -> ChatbotSessionManager:
    """Build the manager on first use (settings from ``load``) and return it ever after."""
    global _manager
    with _lock:
        if _manager is None:
            _manager = ChatbotSessionManager(settings=load())
        return _manager


def reset_shared_manager() -> None:
    """Close and forget the manager (tests, and a clean shutdown)."""
    global _manager
    with _lock:
        if _manager is not None:
            _manager.close()
        _manager = None
