"""The benchmarks. Each runs the old design and the new one in the same run.

Times are medians (the machines are shared and noisy); ratios are old / new.
"""

from __future__ import annotations

import asyncio
import gc
import json
import math
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from langchain.agents import create_agent
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, message_to_dict

from bench.designs import PerSessionAgentSession, old_session
from core import AgentSpec, ChatbotSessionManager, turns
from core.offline_model import OfflineChatModel
from core.group_commit import running_loop
from core.ids import new_run_id
from core.runs import RunWorker
from core.runtime import settle_garbage_collector
from core.tools import DEFAULT_TOOLS

ROOT = Path(__file__).resolve().parents[1]


def median_us(samples: list[float]) -> float:
    return statistics.median(samples) * 1e6


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1)]


def timed_batches(make, count: int, batch: int) -> list[float]:
    """Seconds per item, one sample per batch of ``batch`` calls."""
    samples, kept = [], []
    for _ in range(max(1, count // batch)):
        start = time.perf_counter()
        for _ in range(batch):
            kept.append(make())
        samples.append((time.perf_counter() - start) / batch)
    return samples


# 1. session creation ---------------------------------------------------------------
def creation(new_sizes: list[int], old_sizes: list[int]) -> list[dict[str, Any]]:
    rows = []
    for size in sorted(set(new_sizes) | set(old_sizes)):
        row: dict[str, Any] = {"sessions": size}
        manager = ChatbotSessionManager(RATE_LIMIT_PER_MINUTE=0, DATABASE_URL="sqlite://",
                                        MAX_SESSIONS_IN_MEMORY=max(size * 2, 10))
        row["new_us"] = median_us(timed_batches(manager.create_session, size, 100))
        manager.close()
        if size in old_sizes:
            row["old_us"] = median_us(timed_batches(old_session, size, 20))
            row["ratio"] = row["old_us"] / row["new_us"]
        rows.append(row)
    return rows


# 2. memory per idle session --------------------------------------------------------
def memory(new_sizes: list[int], old_sizes: list[int]) -> list[dict[str, Any]]:
    rows = []
    for size in sorted(set(new_sizes) | set(old_sizes)):
        row: dict[str, Any] = {"sessions": size}
        for design, sizes in (("new", new_sizes), ("old", old_sizes)):
            if size in sizes:
                probe = subprocess.run(
                    [sys.executable, "-m", "bench.memory_probe", design, str(size)],
                    cwd=ROOT, capture_output=True, text=True, check=True)
                result = json.loads(probe.stdout)
                row[f"{design}_traced_bytes"] = result["traced_bytes_per_session"]
                row[f"{design}_rss_bytes"] = result["rss_bytes_per_session"]
        if "old_traced_bytes" in row and "new_traced_bytes" in row:
            row["traced_ratio"] = row["old_traced_bytes"] / row["new_traced_bytes"]
        rows.append(row)
    return rows


# 3. per-message overhead -----------------------------------------------------------
def overhead(turns: int, history_size: int = 10) -> dict[str, Any]:
    """One turn through manager + pool + SQLite store vs the same turn on the agent alone.

    Each session has ``history_size`` stored messages and has already had one turn in this
    process (a conversation in progress); the agent alone gets the very same history and
    is streamed as the run engine streams (``astream`` on the worker's event loop, called
    from this thread); ``agent.invoke`` is reported beside it for reference.
    """
    folder = tempfile.mkdtemp(prefix="poolchat-bench-")
    manager = ChatbotSessionManager(RATE_LIMIT_PER_MINUTE=0,
                                    DATABASE_URL=f"sqlite:///{folder}/bench.db",
                                    OFFLINE_STREAM_DELAY=0)
    prior = []
    for i in range((history_size - 2) // 2):
        prior += [HumanMessage(f"Message {i}"), AIMessage(f"Reply {i}")]
    sessions = []
    for _ in range(turns):
        session = manager.create_session()
        manager.store.ensure_session(session.session_id, title="bench")
        manager.store.append_messages(session.session_id, prior)
        session.send("hello")  # the conversation is under way
        sessions.append((session, session.messages))
    agent = manager.pool.agents[0]
    bare = _BareWrites(f"{folder}/bench.db")
    writes_loop = asyncio.new_event_loop()  # the engine writes from a loop, as runs do
    invoked, direct, managed, writes, engine, rows = [], [], [], [], [], []
    for session, stored in sessions:  # interleaved, so all see the same machine state
        history = [*stored, HumanMessage("hello there")]
        start = time.perf_counter()
        result = agent.invoke({"messages": history})
        invoked.append(time.perf_counter() - start)
        start = time.perf_counter()
        manager.worker.submit(_drain(agent, history)).result()
        direct.append(time.perf_counter() - start)
        start = time.perf_counter()
        session.send("hello there")
        managed.append(time.perf_counter() - start)
        start = time.perf_counter()
        bare.turn(session.session_id, HumanMessage("hello there"), result["messages"][-1])
        writes.append(time.perf_counter() - start)
        engine.append(writes_loop.run_until_complete(  # timed inside: not the loop's start
            _engine_writes(manager, session.session_id, result["messages"][-1])))
        start = time.perf_counter()
        bare.turn_rows(session.session_id, HumanMessage("hello there"),
                       result["messages"][-1])
        rows.append(time.perf_counter() - start)
    manager.close()
    writes_loop.close()
    bare.db.close()
    direct_us, managed_us, writes_us = median_us(direct), median_us(managed), median_us(writes)
    overhead_us = managed_us - direct_us
    return {"history_messages": history_size, "turns": turns,
            "agent_invoke_us": median_us(invoked), "agent_alone_us": direct_us,
            "through_manager_us": managed_us, "overhead_us": overhead_us,
            "overhead_ratio": overhead_us / direct_us,
            "bare_writes_us": writes_us, "bare_writes_ratio": writes_us / direct_us,
            "overhead_vs_bare_writes": overhead_us / writes_us,
            "engine_writes_us": median_us(engine),
            "overhead_beyond_engine_writes_us": overhead_us - median_us(engine),
            "bare_rows_us": median_us(rows),
            "overhead_vs_bare_rows": overhead_us / median_us(rows)}


async def _engine_writes(manager: ChatbotSessionManager, session_id: str,
                         reply: BaseMessage) -> float:
    """The run engine's two transactions for one turn, written from an event loop as a
    run writes them: the user's message with the run and its reply row, then the reply,
    the run's end and its usage row. What a durable, resumable, metered run writes,
    without an agent, a pool or a thread hand-off. Returns the seconds they took."""
    start = time.perf_counter()
    run_id = new_run_id()
    runs = manager.store.runs
    started = await runs.astart_turn(
        session_id, HumanMessage("hello there"),
        run={"id": run_id, "agent": "", "replica": manager.replica_id},
        reply={"model": "offline-demo", "custom_agent": False},
        stale_before=time.time() - 10)
    loop = asyncio.get_running_loop()
    stored: asyncio.Future[BaseException | None] = loop.create_future()
    runs.finish_turn_later(  # told on the thread that stored it: this one, unless busy
        lambda _value, error: stored.set_result(error) if running_loop() is loop
        else loop.call_soon_threadsafe(stored.set_result, error),
        session_id, run_id, started.reply_id, reply, "complete", None, "pool:0", {
            "run_id": run_id, "owner": "anonymous", "model": "offline-demo",
            "member": "pool:0", "agent_version": 1, "custom": False, "status": "complete",
            "input_tokens": 10, "output_tokens": 5, "estimated": True, "cost": None,
            "ttft": 0.001, "total_seconds": 0.002, "queue_seconds": 0.0,
            "finished_at": time.time()})
    error = await stored
    if error is not None:
        raise error
    return time.perf_counter() - start


async def _drain(agent: Any, history: list[BaseMessage]) -> str:
    """The agent alone, streamed exactly as the run engine streams every reply."""
    done = turns.TurnResult()
    async for _event in turns.astream(agent, history, done):
        pass
    return done.reply


class _BareWrites:
    """A turn's two durable writes, as plainly as they go: one INSERT each, in its own
    transaction, on the bare sqlite3 driver (no SQLAlchemy, no manager, no bookkeeping).

    The least any design pays per turn on SQLite when it stores the user's message before
    calling the model and the reply before returning it.
    """

    INSERT = ("INSERT INTO messages (session_id, role, content, payload, status, model, "
              "custom_agent, created_at) VALUES (?, ?, ?, ?, 'complete', ?, 0, ?)")

    def __init__(self, path: str) -> None:
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA synchronous=NORMAL")

    def turn(self, session_id: str, human: BaseMessage, reply: BaseMessage) -> None:
        for message, model in ((human, None), (reply, "offline-demo")):
            payload = json.dumps(message_to_dict(message), default=str)
            self.db.execute(self.INSERT, (session_id, message.type, message.text, payload,
                                          model, time.time()))

    def turn_rows(self, session_id: str, human: BaseMessage, reply: BaseMessage) -> None:
        """Every row a durable, resumable, metered turn stores, as plainly: the user's
        message, the run, the reply row (running) and the chat's time in one transaction;
        the reply, the run's end and the usage row in a second."""
        run_id, now = new_run_id(), time.time()
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        db.execute(self.INSERT, (session_id, "human", human.text,
                                 json.dumps(message_to_dict(human), default=str), None, now))
        db.execute("INSERT INTO runs (id, session_id, user_message_id, status, agent, replica,"
                   " stop_requested, started_at, updated_at) VALUES (?, ?, 0, 'running', '',"
                   " '', 0, ?, ?)", (run_id, session_id, now, now))
        reply_id = db.execute(
            "INSERT INTO messages (session_id, role, content, payload, status, model, "
            "custom_agent, created_at, run_id) VALUES (?, 'ai', '', '{}', 'running', ?, 0, ?, ?)"
            " RETURNING id", (session_id, "offline-demo", now, run_id)).fetchone()[0]
        db.execute("UPDATE sessions SET updated_at = ? WHERE id = ?", (now, session_id))
        db.execute("COMMIT")
        db.execute("BEGIN IMMEDIATE")
        db.execute("UPDATE messages SET content = ?, payload = ?, status = 'complete' "
                   "WHERE id = ?", (reply.text, json.dumps(message_to_dict(reply), default=str),
                                    reply_id))
        db.execute("UPDATE runs SET status = 'complete', finished_at = ?, updated_at = ? "
                   "WHERE id = ?", (now, now, run_id))
        db.execute("INSERT INTO usage (run_id, owner, model, member, agent_version, custom, "
                   "status, input_tokens, output_tokens, estimated, cost, ttft, total_seconds,"
                   " queue_seconds, finished_at) VALUES (?, 'anonymous', 'offline-demo', "
                   "'pool:0', 1, 0, 'complete', 10, 5, 1, NULL, 0.001, 0.002, 0, ?)",
                   (run_id, now))
        db.execute("COMMIT")


# 4. concurrency --------------------------------------------------------------------
class CountingModel(OfflineChatModel):
    """An offline model with provider latency that records peak concurrent requests."""

    def _generate(self, messages, *args, **kwargs):
        with PEAK.lock:
            PEAK.now += 1
            PEAK.peak = max(PEAK.peak, PEAK.now)
        try:
            return super()._generate(messages, *args, **kwargs)
        finally:
            with PEAK.lock:
                PEAK.now -= 1

    async def _agenerate(self, messages, *args, **kwargs):
        with PEAK.lock:
            PEAK.now += 1
            PEAK.peak = max(PEAK.peak, PEAK.now)
        try:
            return await super()._agenerate(messages, *args, **kwargs)
        finally:
            with PEAK.lock:
                PEAK.now -= 1

    async def _astream(self, messages, *args, **kwargs):
        """The run engine streams every reply: count those requests too."""
        with PEAK.lock:
            PEAK.now += 1
            PEAK.peak = max(PEAK.peak, PEAK.now)
        try:
            async for chunk in super()._astream(messages, *args, **kwargs):
                yield chunk
        finally:
            with PEAK.lock:
                PEAK.now -= 1


class _Peak:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = self.peak = 0

    def reset(self) -> None:
        self.now = self.peak = 0


PEAK = _Peak()


def slow_factory(latency: float):
    def build(spec: AgentSpec):
        return create_agent(CountingModel(latency=latency), tools=list(DEFAULT_TOOLS))
    return build


def concurrency(sessions: int, pool_sizes: list[int], latency: float = 0.1,
                limit: int = 10, repeats: int = 3) -> list[dict[str, Any]]:
    """Every design ``repeats`` times; each row is the run with the median wall time.

    Besides the pools and the old design, each mode measures the floor: the same turns
    on one agent with no pool, store or limit. Its wall time is about what this process
    needs whatever the design (CPU); a target well below it cannot be met here. The
    machine's speed drifts by a quarter between minutes here, so each pool run is paired
    with a floor run next to it (floor first, then run first, alternately) and compared
    with that one: ``vs_floor`` is the median of the pairs' ratios.
    Each pool runs with the app's garbage-collector settings and with Python's defaults,
    alternately, so both see the same machine.
    """
    rows, with_defaults = [], []
    for mode in ("threads", "asyncio"):
        floors = []
        for size in pool_sizes:
            settled, default = [], []
            for i in range(repeats):
                floor_first = i % 2 == 0
                if floor_first:
                    floor = _concurrent_floor(mode, sessions, latency)
                run = _concurrent_run(mode, size, sessions, latency, limit)
                if not floor_first:
                    floor = _concurrent_floor(mode, sessions, latency)
                with python_gc_defaults():
                    other = {**_concurrent_run(mode, size, sessions, latency, limit),
                             "gc": "python defaults"}
                floors.append(floor)
                settled.append(_paired(run, floor))
                default.append(_paired(other, floor))
            rows.append(_median_paired(settled))
            with_defaults.append(_median_paired(default))
        rows.append(_median_run([_concurrent_old(mode, sessions, latency)
                                 for _ in range(repeats)]))
        rows.append(_median_run(floors))
    return rows + with_defaults


def _paired(run: dict[str, Any], floor: dict[str, Any]) -> dict[str, Any]:
    return {**run, "floor_s": floor["wall_s"], "vs_floor": run["wall_s"] / floor["wall_s"]}


def _median_paired(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median run, with the median of the runs' ratios to their own floors."""
    return {**_median_run(runs), "vs_floor": statistics.median(r["vs_floor"] for r in runs),
            "vs_floor_runs": sorted(round(r["vs_floor"], 3) for r in runs)}


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    runs = sorted(runs, key=lambda r: r["wall_s"])
    return {**runs[len(runs) // 2], "wall_s_runs": [round(r["wall_s"], 3) for r in runs],
            "cpu_s_median": statistics.median(r["cpu_s"] for r in runs)}


@contextmanager
def python_gc_defaults() -> Iterator[None]:
    """Run with Python's own collector settings, then settle it again as the app does."""
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    try:
        yield
    finally:
        settle_garbage_collector()


def _concurrent_run(mode: str, size: int, count: int, latency: float, limit: int
                    ) -> dict[str, Any]:
    folder = tempfile.mkdtemp(prefix="poolchat-bench-")
    manager = ChatbotSessionManager(slow_factory(latency), RATE_LIMIT_PER_MINUTE=0,
                                    DATABASE_URL=f"sqlite:///{folder}/bench.db",
                                    AGENT_POOL_SIZE=size, AGENT_MAX_CONCURRENCY=limit,
                                    AGENT_QUEUE_TIMEOUT=600)
    sessions = [manager.create_session() for _ in range(count)]
    ideal = math.ceil(count / (size * limit)) * latency
    row = _fire(mode, [s.send for s in sessions], [s.asend for s in sessions], ideal)
    stats = manager.get_stats()
    served = sum(a["served"] for a in stats["pool"])
    waited = sum(a["queue_wait_seconds"] for a in stats["pool"])
    manager.close()
    return {**row, "design": "new", "gc": "settled", "pool_size": size,
            "limit_per_agent": limit, "mean_queue_wait_ms": waited / max(served, 1) * 1e3,
            "messages_stored": stats["total_messages"]}


def _concurrent_old(mode: str, count: int, latency: float) -> dict[str, Any]:
    sessions = [PerSessionAgentSession(create_agent(CountingModel(latency=latency),
                                                    tools=list(DEFAULT_TOOLS)))
                for _ in range(count)]

    async def asend(session, text):
        session.history.append(HumanMessage(text))
        result = await session.agent.ainvoke({"messages": session.history})
        return result["messages"][-1].text

    row = _fire(mode, [s.send for s in sessions],
                [lambda t, s=s: asend(s, t) for s in sessions], latency)
    return {**row, "design": "old (agent per session, unbounded)", "pool_size": None}


def _concurrent_floor(mode: str, count: int, latency: float) -> dict[str, Any]:
    """The same turns on one agent, nothing else: no pool, no sessions, no store. Each is
    streamed as the run engine streams: on one event loop (this one for asyncio; a worker
    loop that the threads wait on, as the app's runs do)."""
    agent = create_agent(CountingModel(latency=latency), tools=list(DEFAULT_TOOLS))
    worker = RunWorker()

    def send(text):
        return worker.submit(_drain(agent, [HumanMessage(text)])).result()

    async def asend(text):
        return await _drain(agent, [HumanMessage(text)])

    try:
        row = _fire(mode, [send] * count, [asend] * count, latency)
    finally:
        worker.close()
    return {**row, "design": "floor (one agent alone, unbounded)", "pool_size": None}


def _fire(mode: str, sync_calls, async_calls, ideal: float) -> dict[str, Any]:
    """Send every caller its message at once; what a row of the table reports."""
    count = len(sync_calls)
    texts = [f"My name is Person{i}." for i in range(count)]
    PEAK.reset()
    latencies, replies, wall, cpu = _all_at_once(mode, sync_calls, async_calls, texts)
    return {"mode": mode, "sessions": count, "wall_s": wall, "cpu_s": cpu, "ideal_s": ideal,
            "wall_vs_ideal": wall / ideal, "p50_ms": percentile(latencies, 50) * 1e3,
            "p95_ms": percentile(latencies, 95) * 1e3, "p99_ms": percentile(latencies, 99) * 1e3,
            "peak_provider_requests": PEAK.peak,
            "replies_in_own_session": sum(reply.startswith(f"Nice to meet you, Person{i}.")
                                          for i, reply in enumerate(replies))}


def _all_at_once(mode, sync_calls, async_calls, texts):
    count = len(texts)
    latencies = [0.0] * count
    replies = [""] * count
    if mode == "threads":
        barrier = threading.Barrier(count + 1)

        def run(i):
            barrier.wait()
            start = time.perf_counter()
            replies[i] = sync_calls[i](texts[i])
            latencies[i] = time.perf_counter() - start

        threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
        for thread in threads:
            thread.start()
        barrier.wait()
        began, cpu = time.perf_counter(), time.process_time()
        for thread in threads:
            thread.join()
        return latencies, replies, time.perf_counter() - began, time.process_time() - cpu

    async def one(i):
        start = time.perf_counter()
        replies[i] = await async_calls[i](texts[i])
        latencies[i] = time.perf_counter() - start

    async def main():
        began, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(one(i) for i in range(count)))
        return time.perf_counter() - began, time.process_time() - cpu

    wall, cpu = asyncio.run(main())
    return latencies, replies, wall, cpu


# 5. long histories -----------------------------------------------------------------
def long_history(messages: int, repeats: int) -> dict[str, Any]:
    folder = tempfile.mkdtemp(prefix="poolchat-bench-")
    url = f"sqlite:///{folder}/bench.db"
    manager = ChatbotSessionManager(RATE_LIMIT_PER_MINUTE=0, DATABASE_URL=url,
                                    OFFLINE_STREAM_DELAY=0)
    session = manager.create_session()
    manager.chat.send(session, "My name is Lin Ortega.")
    batch = []
    for i in range((messages - 2) // 2):
        batch += [HumanMessage(f"Filler question number {i}?"), AIMessage(f"Filler answer {i}.")]
    manager.store.append_messages(session.session_id, batch)
    session_id = session.session_id
    manager.close()

    resume_new, send_new, resume_old, send_old = [], [], [], []
    for _ in range(repeats):
        fresh = ChatbotSessionManager(RATE_LIMIT_PER_MINUTE=0, DATABASE_URL=url,
                                    OFFLINE_STREAM_DELAY=0)
        start = time.perf_counter()
        resumed = fresh.get_session(session_id)
        fresh.store.load_messages_with_status(session_id, last=200)  # what the page shows
        resume_new.append(time.perf_counter() - start)
        start = time.perf_counter()
        resumed.send("what is 2+2")
        send_new.append(time.perf_counter() - start)

        start = time.perf_counter()  # old: the whole history back into memory
        old = PerSessionAgentSession(fresh.pool.agents[0])
        old.history = fresh.store.load_messages(session_id)
        resume_old.append(time.perf_counter() - start)
        start = time.perf_counter()
        old.send("what is 2+2")  # old: everything sent, untrimmed
        send_old.append(time.perf_counter() - start)
        fresh.close()
    return {"stored_messages": messages, "resume_new_ms": median_us(resume_new) / 1e3,
            "resume_old_ms": median_us(resume_old) / 1e3,
            "send_new_ms": median_us(send_new) / 1e3, "send_old_ms": median_us(send_old) / 1e3}
