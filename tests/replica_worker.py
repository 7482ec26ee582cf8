"""Work done in a separate process, as another app replica would (for test_replicas)."""

from __future__ import annotations

import time

from core import ChatbotSessionManager
from core.errors import MessageRejected
from core.replicas import ReplicaReporter


def migrate_only(url: str) -> list[str]:
    """The migration steps this process applied (a replica starting up)."""
    from core.migrations import migrate
    from core.schema import metadata
    from core.store import create_db_engine

    engine = create_db_engine(url)
    try:
        return migrate(engine, metadata)
    finally:
        engine.dispose()


def scripted(url: str) -> ChatbotSessionManager:
    """A replica whose model answers with the first question it was sent (and a count)."""
    from tests.fakes import ScriptedModel, first_words, scripted_factory

    return ChatbotSessionManager(scripted_factory(ScriptedModel(answer=first_words)),
                                 DATABASE_URL=url)


def start_chat(url: str, text: str) -> str:
    manager = scripted(url)
    try:
        session = manager.create_session()
        session.send(text)
        return session.session_id
    finally:
        manager.close()


def continue_chat(url: str, session_id: str, text: str) -> tuple[str, list[str]]:
    manager = scripted(url)
    try:
        session = manager.get_session(session_id)
        reply = session.send(text)
        return reply, [m.text for m in session.messages if m.type == "human"]
    finally:
        manager.close()


def write_many(url: str, session_id: str, prefix: str, count: int, go) -> None:
    # replies of about 0.1 s: long enough to overlap the other replica's sends
    manager = ChatbotSessionManager(DATABASE_URL=url, RATE_LIMIT_PER_MINUTE=0,
                                    OFFLINE_STREAM_DELAY=0.002)
    try:
        session = manager.get_session(session_id)
        go.wait(30)
        for i in range(count):
            while True:  # one reply at a time per chat: wait for the other replica's
                try:
                    session.send(f"{prefix}{i}")
                    break
                except MessageRejected:
                    time.sleep(0.01)
    finally:
        manager.close()


def serve_and_report(url: str, replica_id: str, messages: int) -> None:
    manager = ChatbotSessionManager(DATABASE_URL=url)
    try:
        for _ in range(messages):
            manager.create_session().send("what is 1+1")
        ReplicaReporter(manager, replica_id=replica_id).publish()
    finally:
        manager.close()


def ask_during_a_cooldown(url: str, members: list, ready, cooling) -> tuple[str, float]:
    """A replica that learns of another's 429 from the database and waits it out.

    Returns its reply and when (wall clock) it saw the cooldown."""
    manager = ChatbotSessionManager(DATABASE_URL=url, MEMBERS=members, OPENAI_TIMEOUT=5)
    try:
        session = manager.create_session()
        ready.set()
        cooling.wait(30)  # the other replica got its 429 ...
        deadline = time.time() + 10
        while manager.get_stats()["pool"][0]["state"] != "cooling down":  # ... we know it
            assert time.time() < deadline, "the cooldown never reached this replica"
            time.sleep(0.01)
        seen = time.time()
        return session.send("hello from the other replica"), seen
    finally:
        manager.close()
