"""The Streamlit pages through AppTest: chat flow, URL resume, stats."""

from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from core.runtime import reset_shared_manager

APP = str(Path(__file__).resolve().parents[1] / "app.py")


@pytest.fixture(autouse=True)
def fresh_app_state():
    """AppTest shares one process: clear Streamlit's caches and the core's manager."""
    st.cache_resource.clear()
    reset_shared_manager()
    yield
    st.cache_resource.clear()
    reset_shared_manager()


def open_app(**query) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30)
    for key, value in query.items():
        at.query_params[key] = value
    return at.run()


def test_the_chat_page_answers_through_a_visible_tool_step():
    at = open_app()
    assert not at.exception
    at.chat_input[0].set_value("what is 12*7?").run()
    assert not at.exception
    user, assistant = at.chat_message
    assert user.text[0].value == "what is 12*7?"
    assert assistant.markdown[0].value == "12*7 = 84"
    assert "calculator" in assistant.expander[0].label


def test_the_offline_mode_is_announced():
    at = open_app()
    assert "Offline demo mode" in at.info[0].value
    assert "OPENAI_API_KEY" in at.info[0].value


def test_the_session_id_in_the_url_resumes_the_chat():
    first = open_app()
    first.chat_input[0].set_value("My name is Lin Ortega.").run()
    session_id = first.query_params["session"]
    again = open_app(session=session_id)
    assert [m.text[0].value for m in again.chat_message if m.name == "user"] == [
        "My name is Lin Ortega."]
    again.chat_input[0].set_value("What is my name?").run()
    assert again.chat_message[-1].markdown[0].value == "Your name is Lin Ortega."


def test_an_unknown_session_id_opens_a_fresh_chat():
    at = open_app(session="x" * 32)
    assert not at.exception
    assert len(at.chat_message) == 0
    assert at.query_params["session"] != "x" * 32
    assert "unknown" in at.toast[0].value


def test_an_over_long_message_is_refused_with_a_clear_message(monkeypatch):
    monkeypatch.setenv("MAX_MESSAGE_CHARS", "10")
    at = open_app()
    at.chat_input[0].set_value("x" * 11).run()
    assert "too long" in at.warning[0].value
    assert len(at.chat_message) == 0


def test_a_bad_setting_shows_one_clear_line(monkeypatch):
    monkeypatch.setenv("AGENT_POOL_SIZE", "abc")
    at = open_app()
    assert at.error[0].value.startswith("Configuration error: AGENT_POOL_SIZE must be")
    assert not at.exception


def test_the_stats_page_shows_the_seed_numbers():
    chat = open_app()
    chat.chat_input[0].set_value("hello").run()
    at = AppTest.from_file(APP, default_timeout=30)
    at.switch_page("pages/stats.py")
    at.run()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Sessions"] == "1"
    assert metrics["Messages"] == "2"
    assert metrics["Agent pool size"] == "1"
    assert metrics["Custom-agent sessions"] == "0"
