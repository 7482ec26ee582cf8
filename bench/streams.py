"""What streaming a reply to the browser costs: the app against a plain Streamlit chat page.

``python -m bench.streams [--quick]`` starts, side by side, the real app (``streamlit run
app.py``) and the baseline ``bench/plain_chat.py`` (``st.write_stream`` over
``ChatOpenAI.stream``), both talking to ``bench.rate_server`` in this process, which
streams ``w1 w2 ...`` at a set rate and notes when it sent each token. Raw websocket
clients (no browser) open the page, send a chat message through the ``chat_input``
widget's state, and note when each token first shows in the deltas they receive.

Per reply size (one stream): bytes on the websocket, the server's CPU seconds, time to
first token and token lag (seen by the client minus sent by the provider). Per number of
concurrent streams: CPU, lag p99 and stalls. Targets are judged against the plain page
measured in the same run; results go to ``bench/results/streams.json``.

A single stream costs each server a small part of one core, so single-stream runs go to
both servers at once (halving the wall time); concurrent streams saturate a core, so those
scenarios run one server at a time. Each streamlit process's CPU is its own
(``/proc/<pid>/stat``), read before and after each scenario. A stall is a gap over 1 s
in what a client sees while the provider had already sent the next token, or a stream
not done within its timeout (twice its sending time plus 20 s plus 0.5 s per stream).

``--app-root DIR`` runs another copy's app.py (e.g. a ``git archive`` of a commit, or a
snapshot of a working tree that someone is editing); the file watcher is off in both
servers either way.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from websockets.asyncio.client import connect

from bench.rate_server import RateServer
from tests.servers import ROOT, AppServer, start_app, start_streamlit, stop_app

RESULTS = Path(__file__).parent / "results" / "streams.json"
SINGLE_RATE = 50.0  # tokens per second of a single stream
CONCURRENT_TOKENS, CONCURRENT_RATE = 500, 30.0
STALL_S = 1.0
FULL = {"sizes": [100, 500, 2000], "runs": {100: 3, 500: 3, 2000: 3},
        "concurrency": [10, 50, 100]}
QUICK = {"sizes": [100, 500], "runs": {100: 1, 500: 1}, "concurrency": [10]}
TARGETS = {"bytes_2000": 0.10, "cpu_2000": 0.50, "lag_p99_100_ms": 250.0, "ttft_ms": 50.0}
# Both servers ignore edits to their source while the bench runs (no module reloads).
QUIET = {"STREAMLIT_SERVER_FILE_WATCHER_TYPE": "none"}
APP_ENV = {**QUIET, "OPENAI_API_KEY": "sk-bench", "CHAT_MODEL": "bench",
           "RATE_LIMIT_PER_MINUTE": "0", "AGENT_MAX_CONCURRENCY": "1000",
           "OPENAI_MAX_RETRIES": "0"}
FINISHED_EARLY_FOR_RERUN = ForwardMsg.ScriptFinishedStatus.Value("FINISHED_EARLY_FOR_RERUN")
_TOKEN = re.compile(r"(?<![\w-])w(\d+)(?![\w-])")


# -- servers -------------------------------------------------------------------------
Server = AppServer
stop = stop_app


def start_plain(data_dir: Path, **settings: str) -> Server:
    """The baseline page, ``streamlit run bench/plain_chat.py``."""
    return start_streamlit("bench/plain_chat.py", data_dir, **settings)


def start_real_app(data_dir: Path, root: Path | None, **settings: str) -> Server:
    """``streamlit run app.py``: this checkout's (tests/servers.py) or another's, e.g. a
    ``git archive`` of a commit to compare with."""
    if root is None or Path(root).resolve() == ROOT:
        return start_app(data_dir, **settings)
    return start_streamlit("app.py", data_dir, Path(root),
                           DATABASE_URL=f"sqlite:///{data_dir}/poolchat.db", **settings)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- the websocket client ------------------------------------------------------------
def element_text(element) -> str:
    """The text an element shows (markdown, text, code, ...), or '' (widgets, charts)."""
    kind = element.WhichOneof("type")
    if kind == "markdown":
        return element.markdown.body
    if kind in ("text", "alert", "heading", "html", "json"):
        return getattr(element, kind).body
    if kind == "code":
        return element.code.code_text
    if kind == "exception":
        return element.exception.message
    return ""


def last_token(text: str) -> int:
    """The highest ``wN`` in a text (tokens arrive in order: the last one), or 0."""
    found = _TOKEN.findall(text[-48:]) or _TOKEN.findall(text)
    return max(map(int, found)) if found else 0


@dataclass
class Stream:
    """One websocket session: a page run, then one chat message and its streamed reply."""

    url: str
    ident: str
    socket: Any = None
    chat_input_id: str = ""
    query_string: str = ""
    page_script_hash: str = ""
    page_bytes: int = 0
    reply_bytes: int = 0
    messages: int = 0
    sent_at: float = 0.0
    seen: dict[int, float] = field(default_factory=dict)  # token -> first time visible
    ended_at: float = 0.0
    complete: bool = False
    error: str = ""

    async def open(self, timeout: float = 120) -> None:
        self.socket = await connect(self.url.replace("http", "ws") + "/_stcore/stream",
                                    subprotocols=["streamlit"], open_timeout=timeout,
                                    max_size=None, ping_interval=None)
        rerun = BackMsg()
        rerun.rerun_script.query_string = ""
        rerun.rerun_script.page_name = ""
        await self.socket.send(rerun.SerializeToString())
        deadline = time.monotonic() + timeout
        while True:
            raw = await asyncio.wait_for(self.socket.recv(), deadline - time.monotonic())
            self.page_bytes += len(raw)
            msg = ForwardMsg()
            msg.ParseFromString(raw)
            kind = msg.WhichOneof("type")
            if kind == "new_session" and not self.page_script_hash:
                self.page_script_hash = msg.new_session.page_script_hash
            elif kind == "navigation":  # st.navigation: the page that runs
                self.page_script_hash = msg.navigation.page_script_hash
            elif kind == "page_info_changed":  # st.query_params, e.g. ?session=...
                self.query_string = msg.page_info_changed.query_string
            elif kind == "delta" and msg.delta.WhichOneof("type") == "new_element":
                element = msg.delta.new_element
                if element.WhichOneof("type") == "chat_input":
                    self.chat_input_id = element.chat_input.id
            elif kind == "script_finished" and msg.script_finished != FINISHED_EARLY_FOR_RERUN:
                break
        if not self.chat_input_id:
            raise RuntimeError(f"{self.url}: the page has no chat_input")

    async def chat(self, text: str, tokens: int, timeout: float) -> None:
        """Send ``text`` as the chat message; read until ``w<tokens>`` shows and the run ends."""
        rerun = BackMsg()
        rerun.rerun_script.query_string = self.query_string
        rerun.rerun_script.page_name = ""
        rerun.rerun_script.page_script_hash = self.page_script_hash
        widget = rerun.rerun_script.widget_states.widgets.add()
        widget.id = self.chat_input_id
        widget.chat_input_value.data = text
        shown = 0
        self.sent_at = time.monotonic()
        deadline = self.sent_at + timeout
        await self.socket.send(rerun.SerializeToString())
        try:
            while True:
                raw = await asyncio.wait_for(self.socket.recv(), deadline - time.monotonic())
                now = time.monotonic()
                self.reply_bytes += len(raw)
                self.messages += 1
                msg = ForwardMsg()
                msg.ParseFromString(raw)
                kind = msg.WhichOneof("type")
                if kind == "delta" and msg.delta.WhichOneof("type") == "new_element":
                    top = last_token(element_text(msg.delta.new_element))
                    if top > shown:
                        for k in range(shown + 1, top + 1):
                            self.seen[k] = now
                        shown = top
                elif kind == "page_info_changed":
                    self.query_string = msg.page_info_changed.query_string
                elif (kind == "script_finished" and shown >= tokens
                      and msg.script_finished != FINISHED_EARLY_FOR_RERUN):
                    self.complete = True
                    return
        except (TimeoutError, asyncio.TimeoutError):
            self.error = f"timed out after {timeout:.0f} s at token {shown} of {tokens}"
        except Exception as exc:  # a dropped connection: reported, not fatal to the bench
            self.error = f"{type(exc).__name__}: {exc} at token {shown} of {tokens}"
        finally:
            self.ended_at = time.monotonic()

    async def close(self) -> None:
        if self.socket is not None:
            await self.socket.close()


# -- what the model client alone costs ----------------------------------------------
FLOOR_CODE = """
import json, resource, sys
from langchain_openai import ChatOpenAI
url, tokens, rate, mode = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
model = ChatOpenAI(model="bench", api_key="sk-bench", base_url=url, streaming=True,
                   max_retries=0, timeout=300)
if mode == "agent":
    from langchain.agents import create_agent
    from langchain_core.tools import tool

    @tool
    def calculator(expression: str) -> str:
        \"\"\"Evaluate an arithmetic expression.\"\"\"
        return expression

    agent = create_agent(model, tools=[calculator], system_prompt="You are helpful.")
    def stream(text):
        return agent.stream({"messages": [("user", text)]}, stream_mode="messages")
else:
    def stream(text):
        return model.stream(text)
list(stream(f"tokens=5 rate=1000 id=floor-warm-{mode}"))
usage = resource.getrusage(resource.RUSAGE_SELF)
before = usage.ru_utime + usage.ru_stime
chunks = sum(1 for _ in stream(f"tokens={tokens} rate={rate:g} id=floor-{mode}"))
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"chunks": chunks, "cpu_s": usage.ru_utime + usage.ru_stime - before}))
"""


async def client_floor(rates: RateServer, tokens: int, rate: float) -> dict[str, Any]:
    """CPU seconds of the same reply read by ChatOpenAI.stream alone, and by a LangGraph
    ``create_agent`` (one tool, ``stream_mode="messages"``) alone, each in its own process
    with no Streamlit: what any page built on them pays before rendering anything."""
    async def one(mode: str) -> float | None:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", FLOOR_CODE, rates.url, str(tokens), str(rate), mode,
            cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await process.communicate()
        if process.returncode:
            return None
        return json.loads(out.decode().strip().splitlines()[-1])["cpu_s"]

    model, agent = await asyncio.gather(one("model"), one("agent"))
    return {"tokens": tokens, "rate": rate, "chat_openai_stream_cpu_s": model,
            "langgraph_agent_stream_cpu_s": agent}


# -- one scenario --------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile, or None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1e3


def stream_figures(stream: Stream, sent: dict[int, float], tokens: int) -> dict[str, Any]:
    """Lags of one stream, and its stalls: a gap over STALL_S in what the client sees
    while the provider had already sent what came next (or a stream that never ended)."""
    # A token never seen counts as seen when the client gave up (a lower bound), from when
    # the provider sent it or, if it never did, from when the message was sent.
    lags = [stream.seen.get(k, stream.ended_at) - sent.get(k, stream.sent_at)
            for k in range(1, tokens + 1)]
    stalls, longest, previous = 0, 0.0, float("-inf")
    for k in sorted(stream.seen):
        if k not in sent or (k > 1 and stream.seen[k] == stream.seen.get(k - 1)):
            continue  # not the first token of its delta
        gap = stream.seen[k] - max(previous, sent[k])
        longest = max(longest, gap)
        stalls += gap > STALL_S
        previous = stream.seen[k]
    if not stream.complete:
        stalls += 1
    return {"lags": lags, "stalls": stalls, "longest_gap_s": longest,
            "ttft_s": stream.seen[1] - sent[1] if 1 in stream.seen and 1 in sent else None,
            "ttft_user_s": stream.seen[1] - stream.sent_at if 1 in stream.seen else None}


async def scenario(server: Server, rates: RateServer, label: str, streams: int,
                   tokens: int, rate: float, timeout: float) -> dict[str, Any]:
    """``streams`` sessions open the page, then all send a message at once."""
    clients = [Stream(server.url, f"{label}-{i}-{time.monotonic_ns() % 10**9}")
               for i in range(streams)]
    try:
        for start in range(0, streams, 25):  # page runs in batches, as visitors arrive
            await asyncio.gather(*(c.open() for c in clients[start:start + 25]))
        await asyncio.sleep(0.3)  # let the page runs' garbage collection pass
        cpu0, own0, wall0 = cpu_seconds(server.process.pid), own_cpu_seconds(), time.monotonic()
        await asyncio.gather(*(c.chat(f"tokens={tokens} rate={rate:g} id={c.ident}", tokens,
                                      timeout) for c in clients))
        wall = time.monotonic() - wall0
        await asyncio.sleep(0.2)
        cpu = cpu_seconds(server.process.pid) - cpu0
        own = own_cpu_seconds() - own0
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    figures = [stream_figures(c, rates.sent.get(c.ident, {}), tokens) for c in clients]
    lags = [lag for f in figures for lag in f["lags"]]
    ttfts = [f["ttft_s"] for f in figures if f["ttft_s"] is not None]
    waits = [f["ttft_user_s"] for f in figures if f["ttft_user_s"] is not None]
    asked = [rates.started[c.ident] - c.sent_at for c in clients if c.ident in rates.started]
    return {
        "streams": streams, "tokens": tokens, "rate": rate,
        "complete": sum(c.complete for c in clients),
        "all_tokens_seen": all(len(c.seen) == tokens for c in clients),
        "errors": [c.error for c in clients if c.error][:5],
        "bytes": statistics.median(c.reply_bytes for c in clients),
        "bytes_total": sum(c.reply_bytes for c in clients),
        "ws_messages": statistics.median(c.messages for c in clients),
        "page_bytes": statistics.median(c.page_bytes for c in clients),
        "cpu_s": cpu, "bench_cpu_s": own, "wall_s": wall,
        # first token: seen by the client minus sent by the provider ...
        "ttft_ms": _ms(statistics.median(ttfts)) if ttfts else None,
        "ttft_p99_ms": _ms(percentile(ttfts, 99)),
        # ... and seen by the client minus when it sent the message (what a user waits)
        "ttft_user_ms": _ms(statistics.median(waits)) if waits else None,
        "ttft_user_p99_ms": _ms(percentile(waits, 99)),
        # the server's request reaching the provider, from the message being sent
        "provider_requests": len(asked), "to_provider_p99_ms": _ms(percentile(asked, 99)),
        "lag_p50_ms": _ms(percentile(lags, 50)), "lag_p99_ms": _ms(percentile(lags, 99)),
        "lag_max_ms": _ms(max(lags)) if lags else None,
        "lag_is_lower_bound": not all(c.complete for c in clients),
        "stalls": sum(f["stalls"] for f in figures),
        "stalled_streams": sum(f["stalls"] > 0 for f in figures),
        "tokens_unseen": sum(tokens - len(c.seen) for c in clients),
        "longest_gap_s": max(f["longest_gap_s"] for f in figures),
    }


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of each number over repeated runs (structural facts: the worst run)."""
    row = dict(runs[0], runs=len(runs))
    for key, value in runs[0].items():
        if key in ("complete", "stalls", "stalled_streams", "tokens_unseen",
                   "provider_requests"):
            worst = min if key in ("complete", "provider_requests") else max
            row[key] = worst(r[key] for r in runs)
        elif key == "lag_is_lower_bound":
            row[key] = any(r[key] for r in runs)
        elif key == "all_tokens_seen":
            row[key] = all(r[key] for r in runs)
        elif key == "errors":
            row[key] = [e for r in runs for e in r[key]][:5]
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            values = [r[key] for r in runs if r[key] is not None]
            row[key] = statistics.median(values) if values else None
    return row


# -- targets -------------------------------------------------------------------------
def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _worst(values) -> float | None:
    """The largest value; None if any is missing (a stream that never showed a token)."""
    values = list(values)
    return None if not values or None in values else max(values)


def targets(single: list[dict], concurrent: list[dict],
            floor: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Each target with the numbers behind it; a miss names the plain page's figure."""
    rows = []
    big = max(single, key=lambda r: r["tokens"]) if single else None
    if big:
        app, plain = big["app"], big["plain"]
        note = "" if big["tokens"] == 2000 else f" (measured at {big['tokens']} tokens)"
        bytes_ratio = _ratio(app["bytes"], plain["bytes"])
        rows.append({"key": "reply_bytes_vs_plain", "target": f"a 2,000-token reply sends ≤ "
                     f"1/10 of the plain page's bytes{note}", "value": bytes_ratio,
                     "limit": TARGETS["bytes_2000"], "app": app["bytes"], "plain": plain["bytes"],
                     "pass": bytes_ratio is not None and bytes_ratio <= TARGETS["bytes_2000"]})
        cpu_ratio = _ratio(app["cpu_s"], plain["cpu_s"])
        rows.append({"key": "reply_cpu_vs_plain", "target": f"a 2,000-token reply uses ≤ 1/2 "
                     f"of the plain page's server CPU{note}", "value": cpu_ratio,
                     "limit": TARGETS["cpu_2000"], "app": app["cpu_s"], "plain": plain["cpu_s"],
                     "pass": cpu_ratio is not None and cpu_ratio <= TARGETS["cpu_2000"]})
        ttft, plain_ttft = (_worst(r[name]["ttft_ms"] for r in single)
                            for name in ("app", "plain"))
        rows.append({"key": "first_token", "target": "first token visible ≤ 50 ms after the "
                     "provider sends it (single stream, worst size's median)", "value": ttft,
                     "limit": TARGETS["ttft_ms"], "app": ttft, "plain": plain_ttft,
                     "pass": ttft is not None and ttft <= TARGETS["ttft_ms"]})
    else:
        rows += [{"key": key, "target": name, "value": None, "pass": None,
                  "note": "not measured in this run"}
                 for key, name in (("reply_bytes_vs_plain", "2,000-token reply bytes ≤ 1/10"),
                                   ("reply_cpu_vs_plain", "2,000-token reply CPU ≤ 1/2"),
                                   ("first_token", "first token ≤ 50 ms"))]
    most = max(concurrent, key=lambda r: r["streams"]) if concurrent else None
    if most:
        app, plain = most["app"], most["plain"]
        note = "" if most["streams"] == 100 else f" (measured at {most['streams']} streams)"
        ok = (app["lag_p99_ms"] is not None and app["lag_p99_ms"] <= TARGETS["lag_p99_100_ms"]
              and app["stalls"] == 0 and app["complete"] == most["streams"])
        shown = ("lag_p99_ms", "lag_is_lower_bound", "stalls", "complete", "cpu_s")
        rows.append({"key": "concurrent_lag_p99", "target": f"100 concurrent streams: token "
                     f"lag p99 ≤ 250 ms and no stall{note}", "value": app["lag_p99_ms"],
                     "limit": TARGETS["lag_p99_100_ms"], "app": {k: app[k] for k in shown},
                     "plain": {k: plain[k] for k in shown}, "pass": ok})
    else:
        rows.append({"key": "concurrent_lag_p99", "target": "100 concurrent streams: lag p99 "
                     "≤ 250 ms, no stall", "value": None, "pass": None,
                     "note": "not measured in this run"})
    for row in rows:
        if row["pass"] is False:
            row["floor"] = {"what": "the plain st.write_stream page in the same run",
                            "plain": row["plain"]}
            if row["key"] == "reply_cpu_vs_plain" and floor:
                row["floor"]["model_client_alone"] = floor
    return rows


# -- the run -------------------------------------------------------------------------
def _timeout(tokens: int, rate: float, streams: int) -> float:
    return tokens / rate * 2 + 20 + streams * 0.5


async def _measure(servers: dict[str, Server], rates: RateServer, plan: dict[str, Any],
                   log) -> dict[str, Any]:
    for name, server in servers.items():  # warm up: imports, the model client, the pool
        await scenario(server, rates, f"warm-{name}", 1, 5, 1000.0, 60)
    single, floor = [], None
    if plan["sizes"]:
        log(SINGLE_HEAD)
    for tokens in plan["sizes"]:
        runs: dict[str, list] = {name: [] for name in servers}
        for repeat in range(plan["runs"][tokens]):  # one stream per server, both at once
            jobs = [scenario(server, rates, f"{name}-{tokens}", 1, tokens, SINGLE_RATE,
                             _timeout(tokens, SINGLE_RATE, 1)) for name, server in servers.items()]
            if repeat == 0 and tokens == max(plan["sizes"]):  # in the same wall time
                jobs.append(client_floor(rates, tokens, SINGLE_RATE))
            rows = await asyncio.gather(*jobs)
            for name, one in zip(servers, rows):
                runs[name].append(one)
            if len(rows) > len(servers):
                floor = rows[-1]
        row = {"tokens": tokens, "rate": SINGLE_RATE,
               **{name: median_of(r) for name, r in runs.items()}}
        row["ratios"] = {k: _ratio(row["app"][k], row["plain"][k])
                         for k in ("bytes", "cpu_s", "lag_p99_ms")}
        single.append(row)
        log(_single_line(row))
    concurrent = []
    if plan["concurrency"]:
        log("\n" + CONCURRENT_HEAD)
    for streams in plan["concurrency"]:
        row = {"streams": streams, "tokens": CONCURRENT_TOKENS, "rate": CONCURRENT_RATE}
        for name, server in servers.items():
            row[name] = await scenario(server, rates, f"{name}-k{streams}", streams,
                                       CONCURRENT_TOKENS, CONCURRENT_RATE,
                                       _timeout(CONCURRENT_TOKENS, CONCURRENT_RATE, streams))
        row["ratios"] = {k: _ratio(row["app"][k], row["plain"][k])
                         for k in ("cpu_s", "lag_p99_ms")}
        concurrent.append(row)
        log(_concurrent_line(row))
    return {"single": single, "client_floor": floor, "concurrent": concurrent}


def run(quick: bool, *, sizes: list[int] | None = None, concurrency: list[int] | None = None,
        runs: int | None = None, out: Path | None = RESULTS, log=print,
        app_root: Path | None = None) -> dict[str, Any]:
    """Run the benchmark; ``sizes`` / ``concurrency`` / ``runs`` override the plan;
    ``app_root``: run another checkout's app.py (default: this one)."""
    plan = dict(QUICK if quick else FULL)
    if sizes is not None:
        plan["sizes"] = sizes
    if concurrency is not None:
        plan["concurrency"] = concurrency
    plan["runs"] = {t: runs or plan["runs"].get(t, 1) for t in plan["sizes"]}
    started = time.monotonic()
    data_dir = Path(tempfile.mkdtemp(prefix="poolchat-streams-"))
    with RateServer() as rates:
        base = {"OPENAI_API_KEY": "sk-bench", "OPENAI_BASE_URL": rates.url}
        booted: dict[str, Server] = {}
        errors: list[BaseException] = []

        def boot(name: str, start) -> None:
            try:
                booted[name] = start()
            except BaseException as exc:  # reported below, after both have been tried
                errors.append(exc)

        threads = [threading.Thread(target=boot, args=("app", lambda: start_real_app(
                       data_dir, app_root, **APP_ENV, OPENAI_BASE_URL=rates.url))),
                   threading.Thread(target=boot, args=("plain", lambda: start_plain(
                       data_dir, **QUIET, **base, CHAT_MODEL="bench")))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        try:
            if errors:
                raise errors[0]
            servers = {"app": booted["app"], "plain": booted["plain"]}
            measured = asyncio.run(_measure(servers, rates, plan, log))
        except BaseException:
            log(f"server logs kept in {data_dir}")
            raise
        finally:
            for server in booted.values():
                stop(server)
    shutil.rmtree(data_dir, ignore_errors=True)
    results = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
                   f"{platform.python_version()}",
        "app": _describe(app_root), "quick": quick,
        "plan": {**plan, "runs": {str(k): v for k, v in plan["runs"].items()}},
        "single_rate": SINGLE_RATE,
        "concurrent_stream": {"tokens": CONCURRENT_TOKENS, "rate": CONCURRENT_RATE},
        **measured,
        "targets": targets(measured["single"], measured["concurrent"],
                           measured["client_floor"]),
        "provider_requests": rates.requests, "wall_s": time.monotonic() - started,
    }
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2, ensure_ascii=False, allow_nan=False))
    return results


def _describe(root: Path | None) -> str:
    """Which app.py ran: the folder, and its git commit when it is a checkout."""
    where = Path(root or ROOT).resolve()
    try:
        commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=where,
                                capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        commit = ""
    return f"{where}" + (f" at {commit}" if commit else "")


# -- the table -----------------------------------------------------------------------
def _n(value: Any, fmt: str = ".0f") -> str:
    return "-" if value is None else format(value, fmt)


def _lag(row: dict[str, Any]) -> str:
    """Lag p99, with ≥ when some stream did not finish (its unseen tokens count as seen
    at the timeout)."""
    return ("≥" if row.get("lag_is_lower_bound") else "") + _n(row["lag_p99_ms"])


def _single_line(row: dict[str, Any]) -> str:
    a, p, r = row["app"], row["plain"], row["ratios"]
    kb = {name: row[name]["bytes"] / 1e3 for name in ("app", "plain")}
    return (f"{row['tokens']:>6} {a['runs']:>4} {kb['app']:>9,.1f} {kb['plain']:>9,.1f}"
            f" {_n(r['bytes'], '.2f'):>5} {_n(a['cpu_s'], '.2f'):>6} {_n(p['cpu_s'], '.2f'):>6}"
            f" {_n(r['cpu_s'], '.2f'):>5} {_n(a['ttft_ms']):>5} {_n(p['ttft_ms']):>5}"
            f" {_n(a['lag_p50_ms']):>6}/{_n(a['lag_p99_ms']):<6} {_n(p['lag_p50_ms']):>6}/"
            f"{_n(p['lag_p99_ms']):<6} {a['complete']}/{p['complete']}")


def _concurrent_line(row: dict[str, Any]) -> str:
    a, p = row["app"], row["plain"]
    return (f"{row['streams']:>5} {_n(a['cpu_s'], '.1f'):>6} {_n(p['cpu_s'], '.1f'):>6}"
            f" {_lag(a):>7} {_lag(p):>7}"
            f" {_n(a['ttft_user_p99_ms']):>7} {_n(p['ttft_user_p99_ms']):>7}"
            f" {a['stalled_streams']:>5}/{p['stalled_streams']:<5}"
            f" {a['complete']:>5}/{p['complete']:<5} {_n(a['bench_cpu_s'], '.1f'):>5}")


SINGLE_HEAD = (f"One stream at {SINGLE_RATE:g} tokens/s: app vs the plain write_stream page "
               "(medians of the runs; ms unless marked)\n"
               f"{'tokens':>6} {'runs':>4} {'app kB':>9} {'plain kB':>9} {'ratio':>5}"
               f" {'app s':>6} {'plain':>6} {'ratio':>5} {'ttft':>5} {'plain':>5}"
               f" {'app lag p50/p99':>15} {'plain p50/p99':>13} done")
CONCURRENT_HEAD = (f"Concurrent streams of {CONCURRENT_TOKENS} tokens at {CONCURRENT_RATE:g}/s: "
                   "app vs plain (server CPU s; lag and first-token wait p99 in ms)\n"
                   f"{'K':>5} {'cpu':>6} {'plain':>6} {'lag p99':>7} {'plain':>7}"
                   f" {'wait99':>7} {'plain':>7} {'stalled':>11} {'complete':>11} bench cpu")


def table(results: dict[str, Any]) -> str:
    lines = [SINGLE_HEAD, *(_single_line(r) for r in results["single"]), "",
             CONCURRENT_HEAD, *(_concurrent_line(r) for r in results["concurrent"]), "",
             "Targets"]
    for t in results["targets"]:
        mark = {True: "PASS", False: "FAIL", None: "n/a "}[t["pass"]]
        value = t["value"] if not isinstance(t["value"], float) else round(t["value"], 3)
        lines.append(f"  [{mark}] {t['target']}: {value}")
        if "floor" in t:
            lines.append(f"         app {_app(t['app'])}; plain page (same run): "
                         f"{_app(t['floor']['plain'])}")
            alone = t["floor"].get("model_client_alone")
            if alone:
                lines.append(f"         the same reply without Streamlit: ChatOpenAI.stream "
                             f"{_num(alone['chat_openai_stream_cpu_s'])} s, LangGraph agent "
                             f"{_num(alone['langgraph_agent_stream_cpu_s'])} s of CPU")
    return "\n".join(lines)


def _num(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return "-" if value is None else str(value).lower()
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def _app(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {_num(v)}" for k, v in value.items())
    return _num(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 and 500 tokens, 10 streams")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--app-root", type=Path, default=None,
                        help="run app.py from this folder (default: this checkout)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop both servers on the way out
    results = run(args.quick, out=args.out, log=lambda line: print(line, flush=True),
                  app_root=args.app_root)
    print("\n" + table(results))
    print(f"\n{results['wall_s']:.0f} s; written to {args.out}")


if __name__ == "__main__":
    main()
