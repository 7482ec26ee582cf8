"""The database going away in the middle of a chat: a clear error, no acknowledged
message lost, and recovery without intervention once it is back.

The outage is the test's own database's, as the app sees a server restart: every
connection to it is killed and new ones are refused until it is back
(``ALLOW_CONNECTIONS``). Not the whole cluster's: the suite runs on two workers, and a
restart of the machine's PostgreSQL failed whatever test the other worker was running.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine, make_url, text

from core import ChatbotSessionManager
from core.errors import ChatError
from core.turns import Token
from tests.conftest import PG_ADMIN_URL, _pg_database
from tests.fakes import ScriptedModel, first_words, scripted_factory


@contextmanager
def database_down(url: str) -> Iterator[None]:
    """Kill every connection to the database at ``url`` and refuse new ones, until the
    block ends."""
    name = make_url(url).database
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false'))
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE datname = :name"), {"name": name})
        yield
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true'))
        admin.dispose()


@pytest.fixture
def pg_manager():
    databases = _pg_database()
    url = next(databases)
    model = ScriptedModel(answer=first_words)
    manager = ChatbotSessionManager(scripted_factory(model), DATABASE_URL=url)
    yield manager, model, url
    manager.close()
    databases.close()


def test_a_database_outage_mid_reply_loses_no_acknowledged_message(pg_manager):
    pg_manager, model, url = pg_manager
    session = pg_manager.create_session()
    assert session.send("My name is Ada.") == "My name is Ada. (1)"
    down = threading.Event()
    model.enqueue("Once upon a time", pause_after=1, pause=down)  # ends while it is down
    events = session.stream("Tell me about yourself")  # stored: acknowledged
    assert isinstance(next(events), Token)
    with database_down(url):
        down.set()
        with pytest.raises(ChatError, match="database is unavailable"):
            for _ in events:
                pass
        with pytest.raises(ChatError, match="database is unavailable"):
            session.send("Anyone there?")  # refused, so never acknowledged
    assert session.send("What is my name?") == "My name is Ada. (3)"  # nothing lost
    humans = [m.text for m in session.messages if m.type == "human"]
    assert humans == ["My name is Ada.", "Tell me about yourself", "What is my name?"]
    assert pg_manager.get_stats()["total_sessions"] == 1
