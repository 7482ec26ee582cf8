"""The Streamlit app under many concurrent browser sessions: websocket clients on
loopback, each opening the chat page and staying connected.

``python -m bench.browsers`` reports, per number of open sessions, the server's resident
memory per session and how long a new visitor's page run takes.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from websockets.sync.client import connect

from tests.servers import start_app, stop_app

STEPS = [25, 50, 100, 200]


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * 4096


def open_page(url: str):
    """A browser session: connect, run the chat page once, stay connected."""
    socket = connect(url.replace("http", "ws") + "/_stcore/stream", subprotocols=["streamlit"],
                     open_timeout=60)
    rerun = BackMsg()
    rerun.rerun_script.query_string = ""
    rerun.rerun_script.page_name = ""
    start = time.perf_counter()
    socket.send(rerun.SerializeToString())
    while True:
        reply = ForwardMsg()
        reply.ParseFromString(socket.recv(timeout=120))
        if reply.WhichOneof("type") == "script_finished":
            return socket, time.perf_counter() - start


def main() -> None:
    server = start_app(Path(tempfile.mkdtemp(prefix="poolchat-browsers-")))
    sockets, rows = [], []
    try:
        open_page(server.url)[0].close()  # warm: imports, first manager
        base = rss_bytes(server.process.pid)
        for target in STEPS:
            while len(sockets) < target:
                sockets.append(open_page(server.url)[0])
            probe, seconds = open_page(server.url)
            probe.close()
            rss = rss_bytes(server.process.pid)
            rows.append({"sessions": target, "rss_mb": rss / 1e6,
                         "rss_per_session_kb": (rss - base) / target / 1e3,
                         "new_page_run_ms": seconds * 1e3})
            print(f"{target:>5} sessions: RSS {rss / 1e6:.0f} MB "
                  f"({(rss - base) / target / 1e3:.0f} kB per session), "
                  f"a new visitor's page run {seconds * 1e3:.0f} ms", flush=True)
    finally:
        for socket in sockets:
            socket.close()
        stop_app(server)
    out = Path(__file__).parent / "results" / "browsers.json"
    out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
