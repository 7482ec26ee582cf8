"""A process killed with SIGKILL mid-reply loses no acknowledged message, and the
database it leaves behind is intact."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from langchain_core.messages import AIMessage, HumanMessage
from sqlalchemy import text

from core import ChatbotSessionManager
from tests.fakes import ScriptedModel, first_words, scripted_factory
from tests.servers import ROOT

CHILD = """
import sys
import core.chat
from core import ChatbotSessionManager
core.chat.CHECKPOINT_EVERY = 3600  # no partial saved before the kill: nothing to race
manager = ChatbotSessionManager(DATABASE_URL=sys.argv[1], OFFLINE_STREAM_DELAY=0.5)
session = manager.create_session()
print(session.session_id, flush=True)
session.send("My name is Ada.")
print("acknowledged", flush=True)
for event in session.stream("Tell me about yourself"):
    print("streaming", flush=True)
"""


def test_a_killed_process_keeps_every_acknowledged_message(db_url):
    child = subprocess.Popen([sys.executable, "-c", CHILD, db_url], cwd=ROOT,
                             stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    session_id = child.stdout.readline().strip()
    assert child.stdout.readline().strip() == "acknowledged"
    assert child.stdout.readline().strip() == "streaming"  # mid-reply
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    child.stdout.close()

    restarted = ChatbotSessionManager(scripted_factory(ScriptedModel(answer=first_words)),
                                      DATABASE_URL=db_url)
    try:
        session = restarted.get_session(session_id)
        kinds = [(type(m), m.text) for m in session.messages]
        assert kinds[:2] == [(HumanMessage, "My name is Ada."),
                             (AIMessage, "Nice to meet you, Ada. I'll remember your name "
                                         "in this chat.")]
        assert kinds[2] == (HumanMessage, "Tell me about yourself")  # accepted, unanswered
        assert len(kinds) == 3
        assert session.send("Who am I?") == "My name is Ada. (3)"  # all of it is sent
        if restarted.store.dialect == "sqlite":
            with restarted.store.engine.connect() as conn:
                assert conn.execute(text("PRAGMA integrity_check")).scalar() == "ok"
    finally:
        restarted.close()
