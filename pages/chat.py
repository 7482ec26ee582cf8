"""The chat page: one conversation per browser session, resumable from the URL."""

from __future__ import annotations

import streamlit as st
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from core.errors import ChatError, MessageRejected
from core.sessions import ChatbotSession, ChatbotSessionManager
from core.turns import Token, ToolCall, ToolResult
from pages.common import manager_or_stop

SESSION_PARAM = "session"


def current_session(manager: ChatbotSessionManager) -> ChatbotSession:
    """This browser tab's session: from the URL if valid and known, else a new one."""
    wanted = st.query_params.get(SESSION_PARAM)
    session = st.session_state.get("chat_session")
    if session is not None and session.session_id == wanted:
        return session
    found = manager.get_session(wanted) if wanted else None
    if found is None:
        if wanted:
            st.toast("That chat link is unknown or expired, so a new chat was started.")
        found = manager.create_session()
        st.query_params[SESSION_PARAM] = found.session_id
    st.session_state.chat_session = found
    return found


def render_tool_step(call: dict, result: str | None) -> None:
    args = ", ".join(f"{name}={value!r}" for name, value in call["args"].items())
    label = f":material/build: {call['name']}({args})"
    with st.expander(label, expanded=False):
        st.caption("Input")
        st.json(call["args"])
        st.caption("Result")
        st.code(result if result is not None else "(no result)", language=None)


def render_history(session: ChatbotSession) -> None:
    results = {}
    history = session.messages
    for message in history:
        if isinstance(message, ToolMessage):
            results[message.tool_call_id] = message.text
    for message in history:
        if isinstance(message, HumanMessage):
            with st.chat_message("user"):
                st.text(message.text)
        elif isinstance(message, AIMessage):
            with st.chat_message("assistant"):
                for call in message.tool_calls:
                    render_tool_step(call, results.get(call["id"]))
                if message.text:
                    st.markdown(message.text)


def stream_reply(session: ChatbotSession, text: str) -> None:
    with st.chat_message("user"):
        st.text(text)
    with st.chat_message("assistant"):
        steps = st.container()
        calls: dict[str, dict] = {}

        def tokens():
            for event in session.stream(text):
                if isinstance(event, Token):
                    yield event.text
                elif isinstance(event, ToolCall):
                    calls[event.call_id] = {"name": event.name, "args": event.args}
                elif isinstance(event, ToolResult):
                    with steps:
                        render_tool_step(calls.get(event.call_id, {"name": event.name,
                                                                   "args": {}}),
                                         event.content)

        try:
            st.write_stream(tokens())
        except ChatError as exc:
            st.error(str(exc))


manager = manager_or_stop()
session = current_session(manager)

st.title("PoolChat")
if manager.settings.offline:
    st.info("**Offline demo mode** — replies come from PoolChat's built-in offline model, "
            "not an LLM. It can do arithmetic, tell the time and remember your name. "
            "Set `OPENAI_API_KEY` (and `OPENAI_BASE_URL` for Ollama, vLLM or llama.cpp) "
            "to chat with a real model.", icon=":material/cloud_off:")

render_history(session)

prompt = st.chat_input("Message PoolChat")
if prompt is not None:
    try:
        manager.check_message(prompt)
    except MessageRejected as exc:
        st.warning(str(exc))
    else:
        stream_reply(session, prompt)
