"""A small OpenAI-compatible server on 127.0.0.1 that can be told to fail.

It speaks just enough of ``POST /v1/chat/completions`` (plain and streaming SSE, tool
calls) for ChatOpenAI, and each request takes the next scripted ``mode``: ``ok``,
``401``, ``429`` (Retry-After: 1; ``429:S`` for S seconds, ``429:S:D`` answered after D
seconds), ``500``, ``hang`` (past the client's timeout), ``drop`` (closes mid-stream),
``slow`` (a word every ``word_pause`` seconds), ``stall`` (the first word, then the rest
once the test sets ``proceed``) or ``malformed`` (invalid JSON). With
``keys`` set, a request with another key gets a 401. Replies report token usage (in the
stream's last chunk when asked to, as OpenAI does).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeOpenAI:
    def __init__(self) -> None:
        self.modes: deque[str] = deque()
        self.requests: list[dict] = []  # what each request asked, with its arrival time
        self.release = threading.Event()  # ends any "hang"
        self.keys: set[str] = set()  # accepted API keys (empty: any)
        self.word_pause = 0.4  # seconds between words in "slow" mode
        self.proceed = threading.Event()  # lets a "stall" reply go on past its first word
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                mode = fake.modes.popleft() if fake.modes else "ok"
                key = self.headers.get("Authorization", "").removeprefix("Bearer ")
                if fake.keys and key not in fake.keys:
                    mode = "401"
                fake.requests.append({"at": time.monotonic(), "wall": time.time(),
                                      "mode": mode, "body": body,
                                      "auth": self.headers.get("Authorization", "")})
                fake.answer(self, mode, body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeOpenAI:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    # -- replies ----------------------------------------------------------------------
    def answer(self, handler: BaseHTTPRequestHandler, mode: str, body: dict) -> None:
        if mode in ("401", "500"):
            status = int(mode)
            self.json(handler, status, {"error": {"message": f"fake {status}",
                                                  "type": "fake", "code": mode}})
        elif mode.startswith("429"):
            seconds, delay = ([*mode.split(":")[1:], "", ""])[:2]
            time.sleep(float(delay or 0))  # "429:S:D": Retry-After S, answered after D s
            self.json(handler, 429, {"error": {"message": "slow down", "type": "rate"}},
                      {"Retry-After": seconds or "1"})
        elif mode == "hang":
            self.release.wait(30)
        elif mode == "malformed":
            self.raw(handler, 200, b"{not json", "application/json")
        elif body.get("stream"):
            self.stream(handler, body, drop=(mode == "drop"),
                        pause=self.word_pause if mode == "slow" else 0.0,
                        stall=(mode == "stall"))
        else:
            message, finish = self.reply(body)
            self.json(handler, 200, {
                "id": "chatcmpl-fake", "object": "chat.completion", "created": 0,
                "model": body["model"],
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": self.usage(body, message)})

    @staticmethod
    def usage(body: dict, message: dict) -> dict:
        """Token counts the test can predict: one per word sent, one per word answered."""
        sent = sum(len(str(m.get("content") or "").split()) for m in body["messages"])
        answered = len((message.get("content") or "").split()) or 1
        return {"prompt_tokens": sent, "completion_tokens": answered,
                "total_tokens": sent + answered}

    @staticmethod
    def reply(body: dict) -> tuple[dict, str]:
        """A tool call for arithmetic when tools are offered, else a short text."""
        last = body["messages"][-1]
        if last["role"] == "tool":
            return {"role": "assistant", "content": f"The answer is {last['content']}."}, "stop"
        text = last.get("content") or ""
        match = re.search(r"\d+\s*[-+*/]\s*\d+", text if isinstance(text, str) else "")
        if match and body.get("tools"):
            call = {"id": "call_fake1", "type": "function", "function": {
                "name": "calculator", "arguments": json.dumps({"expression": match.group(0)})}}
            return {"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls"
        return {"role": "assistant", "content": "Hello from the fake model, all good."}, "stop"

    def stream(self, handler: BaseHTTPRequestHandler, body: dict, drop: bool,
               pause: float = 0.0, stall: bool = False) -> None:
        message, finish = self.reply(body)
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Connection", "close")
        handler.end_headers()

        def chunk(delta: dict, finish_reason: str | None = None) -> None:
            data = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0,
                    "model": body["model"], "choices": [
                        {"index": 0, "delta": delta, "finish_reason": finish_reason}]}
            handler.wfile.write(f"data: {json.dumps(data)}\n\n".encode())
            handler.wfile.flush()

        chunk({"role": "assistant", "content": ""})
        if message.get("tool_calls"):
            call = message["tool_calls"][0]
            chunk({"tool_calls": [{"index": 0, **call}]})
        else:
            for word in re.findall(r"\S+\s*", message["content"]):
                chunk({"content": word})
                time.sleep(pause)  # a slow provider (mode "slow")
                if stall:  # the slot stays busy until the test is done looking
                    self.proceed.wait(60)
                    stall = False
                if drop:  # the connection dies after the first words, with no error
                    handler.close_connection = True
                    return
        chunk({}, finish)
        if (body.get("stream_options") or {}).get("include_usage"):
            data = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0,
                    "model": body["model"], "choices": [], "usage": self.usage(body, message)}
            handler.wfile.write(f"data: {json.dumps(data)}\n\n".encode())
        handler.wfile.write(b"data: [DONE]\n\n")
        handler.wfile.flush()

    @staticmethod
    def json(handler, status: int, payload: dict, headers: dict | None = None) -> None:
        FakeOpenAI.raw(handler, status, json.dumps(payload).encode(), "application/json",
                       headers)

    @staticmethod
    def raw(handler, status: int, data: bytes, content_type: str,
            headers: dict | None = None) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)
