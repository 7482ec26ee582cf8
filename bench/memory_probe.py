"""Run in a fresh process: bytes per idle session for one design, by tracemalloc and RSS.

``python -m bench.memory_probe old|new N`` prints one JSON line.
"""

from __future__ import annotations

import gc
import json
import sys
import tracemalloc


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


def measure(design: str, count: int) -> dict:
    from bench.designs import old_session
    from core import ChatbotSessionManager

    manager = ChatbotSessionManager(RATE_LIMIT_PER_MINUTE=0, DATABASE_URL="sqlite://",
                                    MAX_SESSIONS_IN_MEMORY=10**7)
    make = old_session if design == "old" else manager.create_session
    make()  # warm: imports, caches, first allocations
    gc.collect()
    rss_before = rss_bytes()
    tracemalloc.start()
    traced_before = tracemalloc.get_traced_memory()[0]
    sessions = [make() for _ in range(count)]
    gc.collect()
    traced = tracemalloc.get_traced_memory()[0] - traced_before
    tracemalloc.stop()
    rss = rss_bytes() - rss_before
    assert len(sessions) == count
    return {"design": design, "sessions": count, "traced_bytes_per_session": traced / count,
            "rss_bytes_per_session": rss / count}


if __name__ == "__main__":
    print(json.dumps(measure(sys.argv[1], int(sys.argv[2]))))
