"""Property-based: the session manager's operations in any order agree with a simple model
of what they should do (hypothesis stateful testing)."""

from __future__ import annotations

import unicodedata

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, precondition, rule

from core import AgentSpec, ChatbotSessionManager, MessageRejected

LIMIT = 40
OWNERS = st.sampled_from(["browser-a", "browser-b"])
TEXTS = st.one_of(
    st.text(max_size=60),
    st.sampled_from(["", "   ", "\x00\x07", "what is 2+2", "مرحبا بالعالم", "<b>hi</b>",
                     "x" * (LIMIT + 1), "My name is Ada.", "\u202eevil", "\x85\x9f",
                     "a\x80" * (LIMIT // 2 + 1)]),
)


def accepted(text: str) -> bool:
    """The rule as a user would state it, not core's regex: control characters (but tab
    and line breaks) do not count, nor surrounding blanks; what is left must be 1 to
    LIMIT characters."""
    kept = "".join(ch for ch in text if unicodedata.category(ch) != "Cc" or ch in "\t\n\r")
    return 0 < len(kept.strip()) <= LIMIT


class ManagerModel(RuleBasedStateMachine):
    sessions = Bundle("sessions")

    def __init__(self) -> None:
        super().__init__()
        self.manager = ChatbotSessionManager(DATABASE_URL="sqlite://", MAX_MESSAGE_CHARS=LIMIT,
                                             RATE_LIMIT_PER_MINUTE=0, OFFLINE_STREAM_DELAY=0)
        self.model: dict[str, dict] = {}  # id -> owner, turns, custom, stored

    def teardown(self) -> None:
        self.manager.close()

    @rule(target=sessions, owner=OWNERS)
    def create(self, owner):
        session = self.manager.create_session(owner=owner)
        self.model[session.session_id] = {"owner": owner, "turns": 0, "custom": False,
                                          "stored": False}
        return session

    @rule(session=sessions, text=TEXTS)
    def send(self, session, text):
        entry = self.model.get(session.session_id)
        if entry is None:
            return
        try:
            reply = session.send(text)
        except MessageRejected:
            assert not accepted(text)
            return
        assert accepted(text) and reply
        entry["turns"] += 1
        entry["stored"] = True

    @rule(session=sessions, owner=OWNERS)
    def delete(self, session, owner):
        entry = self.model.get(session.session_id)
        deleted = self.manager.delete_session(session.session_id, owner=owner)
        assert deleted == (entry is not None and entry["owner"] == owner)
        if deleted:
            del self.model[session.session_id]

    @rule(session=sessions, owner=OWNERS)
    def look_up(self, session, owner):
        entry = self.model.get(session.session_id)
        found = self.manager.get_session(session.session_id, owner=owner)
        assert (found is not None) == (entry is not None and entry["owner"] == owner)

    @precondition(lambda self: self.model)
    @rule(session=sessions, custom=st.booleans())
    def set_agent(self, session, custom):
        entry = self.model.get(session.session_id)
        if entry is None:
            return
        session.agent = AgentSpec("offline-demo", "Be brief.", 0.3) if custom else None
        entry["custom"] = custom
        entry["stored"] = entry["stored"] or custom

    @invariant()
    def stats_match_the_model(self):
        stats = self.manager.get_stats()
        # a conversation counts once it has a message; an opened, empty chat does not
        assert stats["total_sessions"] == sum(e["turns"] > 0 for e in self.model.values())
        assert stats["sessions_with_custom_agents"] == sum(
            e["custom"] and e["turns"] > 0 for e in self.model.values())
        for owner in ("browser-a", "browser-b"):
            listed = {s["session_id"] for s in self.manager.list_sessions(owner=owner)}
            assert listed == {sid for sid, e in self.model.items()
                              if e["owner"] == owner and e["stored"]}


ManagerModel.TestCase.settings = settings(max_examples=25, stateful_step_count=15,
                                          deadline=None,
                                          suppress_health_check=[HealthCheck.too_slow])
TestManagerModel = ManagerModel.TestCase
