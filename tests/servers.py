"""A real `streamlit run app.py` on a free loopback port, for end-to-end tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class AppServer:
    url: str
    process: subprocess.Popen
    log_path: Path
    database: Path | None = None

    def log(self) -> str:
        return self.log_path.read_text()

    def get_json(self, path: str, password: str | None = None) -> dict:
        import json

        request = urllib.request.Request(f"{self.url}{path}", headers={
            "Authorization": f"Bearer {password}"} if password else {})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_app(data_dir: Path, secrets: Path | None = None, **settings: str) -> AppServer:
    """Start the app with a fresh SQLite database and wait until it reports healthy."""
    return start_streamlit("app.py", data_dir, secrets=secrets,
                           DATABASE_URL=f"sqlite:///{data_dir}/poolchat.db", **settings)


def start_streamlit(script: str, data_dir: Path, root: Path = ROOT,
                    secrets: Path | None = None, **settings: str) -> AppServer:
    """``streamlit run <script>`` in ``root`` on a free loopback port, no OPENAI_*
    variables from this machine, ``secrets`` as its secrets file (st.secrets); waits
    until it reports healthy."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env.update(PYTHONUNBUFFERED="1", **settings)
    log_path = data_dir / f"{Path(script).stem}.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", script, "--server.port", str(port),
             "--server.address", "127.0.0.1", "--server.headless", "true",
             "--browser.gatherUsageStats", "false",
             *(["--secrets.files", str(secrets)] if secrets else [])],
            cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = AppServer(f"http://127.0.0.1:{port}", process, log_path,
                       data_dir / "poolchat.db")
    try:
        wait_until_healthy(server)
    except BaseException:
        stop_app(server)
        raise
    RUNNING[server.url] = server
    return server


RUNNING: dict[str, AppServer] = {}  # by address: a failing page can quote its server's log


def wait_until_healthy(server: AppServer, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"streamlit exited:\n{server.log()}")
        try:
            with urllib.request.urlopen(f"{server.url}/_stcore/health", timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.2)  # polling a server that is still starting
    raise TimeoutError(f"streamlit did not become healthy:\n{server.log()}")


def stop_app(server: AppServer) -> None:
    RUNNING.pop(server.url, None)
    server.process.terminate()
    try:
        server.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()
