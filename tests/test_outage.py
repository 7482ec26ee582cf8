"""A PostgreSQL restart in the middle of a chat: a clear error, no acknowledged message
lost, and recovery without intervention once the server is back.

This test stops and starts the machine's PostgreSQL cluster (`pg_ctlcluster`), as root.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from core import ChatbotSessionManager
from core.errors import ChatError
from core.turns import Token
from tests.conftest import _pg_database
from tests.fakes import ScriptedModel, first_words, scripted_factory

VERSION = sorted(os.listdir("/etc/postgresql"))[0] if Path("/etc/postgresql").is_dir() else ""


def cluster(action: str) -> None:
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", VERSION, "main", action,
                    *(["-m", "fast"] if action == "stop" else [])], check=True, timeout=60)
    if action == "start":
        deadline = time.monotonic() + 60
        while subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1"]).returncode != 0:
            assert time.monotonic() < deadline, "PostgreSQL did not come back"
            time.sleep(0.2)  # polling a server that is starting


@pytest.fixture
def pg_manager():
    databases = _pg_database()
    url = next(databases)
    model = ScriptedModel(answer=first_words)
    manager = ChatbotSessionManager(scripted_factory(model), DATABASE_URL=url)
    yield manager, model
    manager.close()
    databases.close()


def test_a_database_restart_mid_reply_loses_no_acknowledged_message(pg_manager):
    pg_manager, model = pg_manager
    session = pg_manager.create_session()
    assert session.send("My name is Ada.") == "My name is Ada. (1)"
    down = threading.Event()
    model.enqueue("Once upon a time", pause_after=1, pause=down)  # ends while it is down
    events = session.stream("Tell me about yourself")  # stored: acknowledged
    assert isinstance(next(events), Token)
    cluster("stop")
    down.set()
    try:
        with pytest.raises(ChatError, match="database is unavailable"):
            for _ in events:
                pass
        with pytest.raises(ChatError, match="database is unavailable"):
            session.send("Anyone there?")  # refused, so never acknowledged
    finally:
        cluster("start")
    assert session.send("What is my name?") == "My name is Ada. (3)"  # nothing lost
    humans = [m.text for m in session.messages if m.type == "human"]
    assert humans == ["My name is Ada.", "Tell me about yourself", "What is my name?"]
    assert pg_manager.get_stats()["total_sessions"] == 1
