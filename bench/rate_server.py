"""A local OpenAI-compatible server that streams recognisable tokens at a fixed rate.

``POST /v1/chat/completions`` answers with ``tokens`` words ``w1 w2 w3 ...`` (a paragraph
break ``\\n\\n`` instead of the space after every ``PARAGRAPH`` words), sent at ``rate``
tokens per second on an absolute schedule, as OpenAI's SSE chunks (a final chunk with
``finish_reason: "stop"``, then ``data: [DONE]``) or as one plain JSON completion.

What to send is read from the last user message, so one server serves every scenario:
``"tokens=500 rate=30 id=r17"``. Each streamed token's ``time.monotonic()`` just after it
was flushed is kept in ``sent[id][k]`` (``k`` from 1), for the clients in the same process
to compare with when they saw it.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PARAGRAPH = 40
_TOKENS = re.compile(r"\btokens=(\d+)")
_RATE = re.compile(r"\brate=([0-9.]+)")
_ID = re.compile(r"\bid=([A-Za-z0-9_.:-]+)")


def token_text(index: int) -> str:
    """The text of token ``index`` (from 1) as it is streamed, with its separator."""
    if index == 1:
        return "w1"
    return ("\n\n" if (index - 1) % PARAGRAPH == 0 else " ") + f"w{index}"


def reply_text(tokens: int) -> str:
    return "".join(token_text(k) for k in range(1, tokens + 1))


def parse_request(text: str) -> tuple[int, float, str]:
    """``(tokens, rate, id)`` from a user message like ``tokens=500 rate=30 id=r1``."""
    tokens = _TOKENS.search(text)
    rate = _RATE.search(text)
    ident = _ID.search(text)
    return (int(tokens.group(1)) if tokens else 20, float(rate.group(1)) if rate else 50.0,
            ident.group(1) if ident else "")


def _last_user_text(body: dict) -> str:
    for message in reversed(body.get("messages", [])):
        if message.get("role") != "user":
            continue
        content = message.get("content") or ""
        if isinstance(content, list):  # content blocks
            return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
        return str(content)
    return ""


class RateServer:
    """``with RateServer() as server: ... server.url ... server.sent[id]``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sent: dict[str, dict[int, float]] = {}  # request id -> token index -> time
        self.started: dict[str, float] = {}  # request id -> when the request arrived
        self.finished: dict[str, float] = {}  # request id -> when [DONE] was sent
        self.requests = 0
        self.errors: list[str] = []
        self._lock = threading.Lock()
        rate_server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self.send_error(404)
                    return
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                try:
                    rate_server._answer(self, body)
                except (BrokenPipeError, ConnectionResetError) as exc:  # client went away
                    rate_server.errors.append(repr(exc))

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.server.request_queue_size = 1024
        self.url = f"http://{host}:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True,
                                       name="rate-server")

    def __enter__(self) -> RateServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- replies ----------------------------------------------------------------------
    def _answer(self, handler: BaseHTTPRequestHandler, body: dict) -> None:
        tokens, rate, ident = parse_request(_last_user_text(body))
        arrived = time.monotonic()
        with self._lock:
            self.requests += 1
            self.started[ident] = arrived
            times = self.sent[ident] = {}
        model = body.get("model", "bench")
        if not body.get("stream"):
            data = json.dumps({
                "id": f"chatcmpl-{ident}", "object": "chat.completion", "created": 0,
                "model": model, "choices": [{"index": 0, "finish_reason": "stop", "message": {
                    "role": "assistant", "content": reply_text(tokens)}}],
                "usage": {"prompt_tokens": 1, "completion_tokens": tokens,
                          "total_tokens": tokens + 1}}).encode()
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
            now = time.monotonic()
            times.update(dict.fromkeys(range(1, tokens + 1), now))
            self.finished[ident] = now
            return

        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Cache-Control", "no-cache")
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.close_connection = True
        prefix = (f'data: {{"id":"chatcmpl-{ident}","object":"chat.completion.chunk",'
                  f'"created":0,"model":{json.dumps(model)},"choices":[{{"index":0,').encode()

        def chunk(delta: dict, finish: str | None = None) -> None:
            tail = json.dumps({"delta": delta, "finish_reason": finish})[1:]
            handler.wfile.write(prefix + tail.encode() + b"]}\n\n")
            handler.wfile.flush()

        chunk({"role": "assistant", "content": ""})
        start = time.monotonic()
        for k in range(1, tokens + 1):
            due = start + (k - 1) / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            chunk({"content": token_text(k)})
            times[k] = time.monotonic()
        chunk({}, "stop")
        handler.wfile.write(b"data: [DONE]\n\n")
        handler.wfile.flush()
        self.finished[ident] = time.monotonic()


if __name__ == "__main__":  # a manual check: python -m bench.rate_server
    with RateServer(port=8765) as server:
        print(f"serving on {server.url}; Ctrl-C to stop", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
