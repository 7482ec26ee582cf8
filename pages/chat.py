"""The chat page: this browser's conversations, streaming replies, per-chat settings.

The conversation shown is the one named in the URL (``?session=...``), so a reload, a
bookmark or a server restart resumes it; a conversation of another browser never opens.
"""

from __future__ import annotations

from collections.abc import Iterator

import streamlit as st
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage

from core.agents import AgentSpec
from core.errors import ChatError, MessageRejected
from core.export import conversation_json, conversation_markdown, escape_markdown, file_name
from core.offline_model import OFFLINE_MODEL_NAME
from core.sessions import ChatbotSession, ChatbotSessionManager
from core.store import COMPLETE, STOPPED
from core.turns import Event, Token, ToolCall, ToolResult
from pages.common import browser_id, manager_or_stop

SESSION_PARAM = "session"
SHOWN_MESSAGES = 200
UNANSWERED = "No reply was saved for this message (interrupted)."
STATUS_NOTES = {STOPPED: "Stopped by you — partial reply.",
                "interrupted": "Interrupted by an error — partial reply."}


# -- which conversation --------------------------------------------------------------
def open_session(manager: ChatbotSessionManager, owner: str) -> ChatbotSession:
    """The conversation in the URL if it is this browser's, else a new one (with a notice)."""
    wanted = st.query_params.get(SESSION_PARAM)
    current = st.session_state.get("chat_session")
    if current is not None and current.session_id == wanted:
        return current
    session = manager.get_session(wanted, owner=owner) if wanted else None
    if session is None:
        if wanted:
            st.toast("That chat link is unknown here, so a new chat was started.",
                     icon=":material/info:")
        session = manager.create_session(owner=owner)
    switch_to(session)
    return session


def switch_to(session: ChatbotSession) -> None:
    st.session_state.chat_session = session
    st.query_params[SESSION_PARAM] = session.session_id


# -- sidebar -------------------------------------------------------------------------
def conversation_list(manager: ChatbotSessionManager, session: ChatbotSession,
                      owner: str) -> None:
    if st.sidebar.button("New chat", icon=":material/add:", use_container_width=True):
        switch_to(manager.create_session(owner=owner))
        st.rerun()
    st.sidebar.caption("Your conversations")
    conversations = manager.list_sessions(owner=owner, limit=50)
    if not conversations:
        st.sidebar.caption("None yet: send a message to start one.")
    for info in conversations:
        current = info["session_id"] == session.session_id
        if st.sidebar.button(escape_markdown(info["title"]) or "Untitled",
                             key=f"open-{info['session_id']}",
                             type="primary" if current else "secondary",
                             use_container_width=True, disabled=current):
            resumed = manager.get_session(info["session_id"], owner=owner)
            if resumed is not None:
                switch_to(resumed)
            st.rerun()


def conversation_actions(manager: ChatbotSessionManager, session: ChatbotSession,
                         owner: str, title: str, has_messages: bool) -> None:
    with st.sidebar.expander("This conversation", icon=":material/edit_note:"):
        new_title = st.text_input("Title", value=title, max_chars=200,
                                  key=f"title-{session.session_id}")
        if st.button("Rename", key="rename", disabled=new_title.strip() in ("", title)):
            manager.rename_session(session, new_title)
            st.rerun()
        def everything():  # read only when a download is clicked, not on every rerun
            return manager.store.load_messages_with_status(session.session_id)

        st.download_button("Export Markdown", lambda: conversation_markdown(title, everything()),
                           file_name=file_name(title, "md"), mime="text/markdown",
                           icon=":material/download:", disabled=not has_messages)
        st.download_button("Export JSON", lambda: conversation_json(title, everything()),
                           file_name=file_name(title, "json"), mime="application/json",
                           icon=":material/data_object:", disabled=not has_messages)
        confirm = st.checkbox("Yes, delete this conversation", key="confirm-delete")
        if st.button("Delete", icon=":material/delete:", disabled=not confirm):
            manager.delete_session(session.session_id, owner=owner)
            st.session_state.pop("confirm-delete", None)
            switch_to(manager.create_session(owner=owner))
            st.rerun()


def agent_settings(manager: ChatbotSessionManager, session: ChatbotSession) -> None:
    spec = session.agent_spec or manager.default_spec
    offline = manager.settings.offline
    with st.sidebar.expander("Agent settings", icon=":material/tune:"):
        if session.has_custom_agent:
            st.caption(f"This chat uses its own agent ({spec.model}).")
        else:
            st.caption(f"This chat uses the shared agent pool ({spec.model}).")
        with st.form("agent-settings", border=False):
            model = st.text_input("Model", value=spec.model, disabled=offline,
                                  help="Offline demo mode has one model." if offline else None)
            prompt = st.text_area("System prompt", value=spec.system_prompt, max_chars=20_000)
            temperature = st.slider("Temperature", 0.0, 2.0, float(spec.temperature), 0.1)
            applied = st.form_submit_button("Use these settings")
        if applied:
            try:
                session.agent = AgentSpec(OFFLINE_MODEL_NAME if offline else model.strip(),
                                          prompt, temperature)
            except ValueError as exc:
                st.error(str(exc))
            else:
                st.rerun()
        if session.has_custom_agent and st.button("Reset to shared agent",
                                                  icon=":material/restart_alt:"):
            session.agent = None
            st.rerun()


# -- messages ------------------------------------------------------------------------
def tool_step(name: str, args: dict, result: str | None) -> None:
    shown = ", ".join(f"{key}={value!r}" for key, value in args.items())
    with st.expander(f":material/build: {name}({shown})"):
        st.caption("Input")
        st.json(args)
        st.caption("Result")
        st.code(result if result is not None else "(no result)", language=None)


def show_history(rows: list[tuple[BaseMessage, str]]) -> None:
    """One bubble per user message and one per assistant turn (tool steps, then text)."""
    results = {m.tool_call_id: m.text for m, _ in rows if isinstance(m, ToolMessage)}
    grouped = group_turns(rows)
    for index, turn in enumerate(grouped):
        first = turn[0][0]
        if isinstance(first, HumanMessage):
            with st.chat_message("user"):
                st.text(first.text)
                following = grouped[index + 1][0][0] if index + 1 < len(grouped) else None
                if isinstance(following, HumanMessage):
                    st.caption(UNANSWERED)
            continue
        with st.chat_message("assistant"):
            for message, status in turn:
                if not isinstance(message, AIMessage):
                    continue
                for call in message.tool_calls:
                    tool_step(call["name"], call["args"], results.get(call["id"]))
                if message.text:
                    st.markdown(message.text)
                if status != COMPLETE:
                    st.caption(STATUS_NOTES.get(status, status))


def group_turns(rows: list[tuple[BaseMessage, str]]) -> list[list[tuple[BaseMessage, str]]]:
    """Split into user messages and the assistant turns between them."""
    turns: list[list[tuple[BaseMessage, str]]] = []
    for row in rows:
        is_user = isinstance(row[0], HumanMessage)
        if is_user or not turns or isinstance(turns[-1][0][0], HumanMessage):
            turns.append([row])
        else:
            turns[-1].append(row)
    return turns


def stream_reply(events: Iterator[Event]) -> str | None:
    """Show tool steps and stream the text; returns an error message if the turn failed.

    On a stop the script ends inside ``write_stream``; closing the events lets the
    manager save the partial reply, marked as stopped.
    """
    with st.chat_message("assistant"):
        steps = st.container()
        calls: dict[str, ToolCall] = {}

        def text() -> Iterator[str]:
            for event in events:
                if isinstance(event, Token):
                    yield event.text
                elif isinstance(event, ToolCall):
                    calls[event.call_id] = event
                elif isinstance(event, ToolResult):
                    call = calls.get(event.call_id)
                    with steps:
                        tool_step(event.name, call.args if call else {}, event.content)

        try:
            st.write_stream(text())
        except ChatError as exc:
            return str(exc)
        finally:
            events.close()
    return None


def start_turn(session: ChatbotSession, prompt: str | None
               ) -> tuple[Iterator[Event] | None, str | None]:
    """Store the user's message (or rewind for a regenerate) before anything is shown."""
    try:
        if st.session_state.pop("regenerate", False):
            return session.regenerate(), None
        if prompt is not None:
            return session.stream(prompt), None
    except (MessageRejected, ChatError) as exc:
        return None, str(exc)
    return None, None


def request_regenerate() -> None:
    st.session_state.regenerate = True


# -- page ----------------------------------------------------------------------------
manager = manager_or_stop()
owner = browser_id()
session = open_session(manager, owner)
prompt = st.chat_input("Message PoolChat", submit_mode="stop")
events, refusal = start_turn(session, prompt)
stored = manager.store.get_session(session.session_id)
title = stored["title"] if stored else ""

rows = manager.store.load_messages_with_status(session.session_id, last=SHOWN_MESSAGES)

conversation_list(manager, session, owner)
conversation_actions(manager, session, owner, title, has_messages=bool(rows))
agent_settings(manager, session)

st.title(escape_markdown(title) or "New chat", anchor=False)
if manager.settings.offline:
    st.info("**Offline demo mode** — replies come from PoolChat's built-in offline model, "
            "not an LLM. It can do arithmetic, tell the time and remember your name. "
            "Set `OPENAI_API_KEY` (and `OPENAI_BASE_URL` for Ollama, vLLM or llama.cpp) "
            "to chat with a real model.", icon=":material/cloud_off:")

if len(rows) == SHOWN_MESSAGES:
    st.caption(f"Showing the latest {SHOWN_MESSAGES} messages; export to see them all.")
show_history(rows)

failure = stream_reply(events) if events is not None else None
if refusal:
    st.warning(refusal, icon=":material/block:")
if failure:
    st.error(failure, icon=":material/error:")
last = manager.store.load_messages(session.session_id, last=1)
if last:
    label = "Retry" if isinstance(last[0], HumanMessage) else "Regenerate"
    st.button(label, icon=":material/refresh:", key="regenerate-button",
              on_click=request_regenerate)
