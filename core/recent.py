"""Recent history of active sessions, kept in memory so a turn need not re-read it.

Bounded by the total number of messages held (least recently used sessions go first).
An entry is only trusted when the store confirms that nothing was written to the session
since (``RunLog.start_turn`` returns the message the new one follows), so other threads or replicas writing to the
same session make it reload, never lose context.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field

from langchain_core.messages import BaseMessage
from langchain_core.messages.utils import count_tokens_approximately


@dataclass(slots=True)
class Recent:
    """A session's newest messages up to ``last_id``, with their token estimates."""

    last_id: int | None
    messages: list[BaseMessage] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)

    def extend(self, batch: list[BaseMessage], last_id: int, window: int) -> None:
        self.messages.extend(batch)
        self.tokens.extend(count_tokens_approximately([m]) for m in batch)
        del self.messages[:-window], self.tokens[:-window]
        self.last_id = last_id


class RecentHistory:
    """Session id → Recent, bounded by ``max_messages`` in total; thread-safe."""

    def __init__(self, max_messages: int = 50_000, window: int = 400) -> None:
        self.max_messages = max_messages
        self.window = window
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, Recent] = OrderedDict()
        self._held = 0

    def take(self, session_id: str) -> Recent | None:
        """Remove and return the entry (the caller puts it back when the turn is done)."""
        with self._lock:
            entry = self._entries.pop(session_id, None)
            if entry is not None:
                self._held -= len(entry.messages)
            return entry

    def put(self, session_id: str, entry: Recent) -> None:
        with self._lock:
            old = self._entries.pop(session_id, None)
            if old is not None:
                self._held -= len(old.messages)
            self._entries[session_id] = entry
            self._held += len(entry.messages)
            while self._held > self.max_messages and self._entries:
                _, evicted = self._entries.popitem(last=False)
                self._held -= len(evicted.messages)

    def drop(self, session_id: str) -> None:
        self.take(session_id)

    @property
    def held(self) -> int:
        return self._held
