"""Shared fixtures: a clean configuration, real databases (SQLite and PostgreSQL), and
managers built on them. No test reaches the network: no API key is ever set, so every
agent runs on the offline model or on a fake plugged in at the agent factory."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import create_engine, text

from core.config import Settings
from core.sessions import ChatbotSessionManager
from core.store import SessionStore
from tests.browser import (  # noqa: F401 - fixtures of the browser tests
    browser, new_page, server, unsynced_server)

PG_ADMIN_URL = os.environ.get("POOLCHAT_TEST_PG",
                              "postgresql+psycopg://postgres@127.0.0.1:5432/test")
CONFIG_VARS = list(Settings.model_fields)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """No setting leaks in from the machine, and no test touches the real data folder."""
    for name in CONFIG_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/default.db")
    monkeypatch.chdir(tmp_path)


def _pg_database() -> Iterator[str]:
    name = f"poolchat_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> Iterator[str]:
    """A fresh, empty database of each kind, dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/poolchat.db"
    else:
        yield from _pg_database()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database, for what only a server database does (row locks)."""
    yield from _pg_database()


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path}/poolchat.db"


@pytest.fixture
def make_manager(db_url) -> Iterator[Callable[..., ChatbotSessionManager]]:
    """Build managers on the test database; each one is closed at the end."""
    built: list[ChatbotSessionManager] = []

    def make(**kwargs) -> ChatbotSessionManager:
        kwargs.setdefault("DATABASE_URL", db_url)
        manager = ChatbotSessionManager(**kwargs)
        built.append(manager)
        return manager

    yield make
    for manager in built:
        manager.close()


@pytest.fixture
def store(db_url) -> Iterator[SessionStore]:
    store = SessionStore(db_url)
    yield store
    store.close()



@pytest.fixture
def fresh_shared_manager() -> Iterator[None]:
    """The app's process-wide manager and Streamlit's caches start empty and end empty
    (AppTest and the app's routes share one process across tests)."""
    import streamlit as st

    from core.runtime import reset_shared_manager

    st.cache_resource.clear()
    reset_shared_manager()
    yield
    st.cache_resource.clear()
    reset_shared_manager()
