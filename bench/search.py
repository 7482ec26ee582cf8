"""Sidebar search over many conversations: ``python -m bench.search``.

One browser with N conversations of 4 messages each, on SQLite and PostgreSQL. Reports the
median time of a search for a word found in one message (and of a word found nowhere: the
full scan), beside listing the newest 50 without a search (the baseline every page view
pays), in one run. Writes ``bench/results/search.json``.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from langchain_core.messages import AIMessage, HumanMessage
from sqlalchemy import create_engine, text

from core.store import SessionStore

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def timed(call, repeats: int = 15) -> float:
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1000


def fill(store: SessionStore, count: int) -> None:
    owner = "o" * 32
    for i in range(count):
        sid = f"{i:032d}"
        store.ensure_session(sid, owner=owner, title=f"Conversation {i}")
        words = "needle" if i == count // 2 else f"topic{i}"
        store.append_messages(sid, [HumanMessage(f"Tell me about {words} please"),
                                    AIMessage(f"Here is what I know about {words}."),
                                    HumanMessage("thanks"), AIMessage("You are welcome.")])


def measure(store: SessionStore, count: int) -> dict:
    owner = "o" * 32
    fill(store, count)
    found = store.search_sessions(owner, "needle")
    assert len(found) == 1, found
    return {"conversations": count, "dialect": store.dialect,
            "list_newest_50_ms": round(timed(lambda: store.list_sessions(owner, 50)), 2),
            "search_hit_ms": round(timed(lambda: store.search_sessions(owner, "needle")), 2),
            "search_miss_ms": round(timed(lambda: store.search_sessions(owner, "zzz")), 2)}


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        store = SessionStore(f"sqlite:///{folder}/search.db")
        rows.append(measure(store, count))
        store.close()
    name = f"poolchat_search_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        store = SessionStore(PG_ADMIN.rsplit("/", 1)[0] + f"/{name}")
        rows.append(measure(store, count))
        store.close()
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    for row in rows:
        print(f"{row['dialect']:>10}: {row['conversations']:,} conversations: list newest 50 "
              f"{row['list_newest_50_ms']} ms, search hit {row['search_hit_ms']} ms, "
              f"miss {row['search_miss_ms']} ms")
    out = Path(__file__).parent / "results" / "search.json"
    out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                               "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
