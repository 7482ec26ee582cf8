"""Message throughput with 1, 2 and 4 replica processes on one PostgreSQL (and SQLite).

Each replica is a process with its own manager and pool; its sessions chat from
threads. Throughput is all stored messages per second of wall time.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from sqlalchemy import create_engine, text

PG_ADMIN_URL = os.environ.get("POOLCHAT_BENCH_PG",
                              "postgresql+psycopg://postgres@127.0.0.1:5432/test")
SPAWN = multiprocessing.get_context("spawn")


def replica(url: str, sessions: int, turns: int, ready) -> int:
    """One replica: ``sessions`` threads, each sending ``turns`` messages."""
    from core import ChatbotSessionManager

    manager = ChatbotSessionManager(RATE_LIMIT_PER_MINUTE=0, DATABASE_URL=url,
                                    AGENT_POOL_SIZE=2,
                                    OFFLINE_STREAM_DELAY=0)
    chats = [manager.create_session() for _ in range(sessions)]

    def chat(session):
        for i in range(turns):
            session.send(f"what is {i}+1")

    threads = [threading.Thread(target=chat, args=(s,)) for s in chats]
    ready.wait(120)  # every replica built, and the clock started
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    count = manager.store.count_messages()
    manager.close()
    return count


def run_replicas(url: str, processes: int, sessions: int, turns: int) -> dict[str, Any]:
    with SPAWN.Manager() as sync, ProcessPoolExecutor(processes, mp_context=SPAWN) as pool:
        ready = sync.Barrier(processes + 1)
        jobs = [pool.submit(replica, url, sessions, turns, ready)
                for _ in range(processes)]
        ready.wait(120)
        start = time.perf_counter()
        for job in jobs:
            job.result()
        wall = time.perf_counter() - start
    turns_done = processes * sessions * turns
    return {"replicas": processes, "turns": turns_done, "wall_s": wall,
            "turns_per_s": turns_done / wall}


def pg_database() -> tuple[str, Any]:
    name = f"poolchat_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop():
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}", drop


def throughput(counts: list[int], sessions: int, turns: int) -> list[dict[str, Any]]:
    import tempfile

    rows = []
    folder = tempfile.mkdtemp(prefix="poolchat-bench-")
    rows.append({"database": "sqlite", **run_replicas(f"sqlite:///{folder}/bench.db", 1,
                                                      sessions, turns)})
    for count in counts:
        url, drop = pg_database()
        try:
            rows.append({"database": "postgresql", **run_replicas(url, count, sessions, turns)})
        finally:
            drop()
    return rows
