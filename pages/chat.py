"""The chat page: this browser's conversations, streaming replies, per-chat settings.

The conversation shown is the one named in the URL (``?session=...``), so a reload, a
bookmark or a server restart resumes it; a conversation of another browser never opens.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import streamlit as st
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from core.agents import AgentSpec
from core.errors import ChatError, MessageRejected
from core.export import conversation_json, conversation_markdown, file_name
from core.limits import (
    FEEDBACK_COMMENT_CHARS,
    PROMPT_MAX_CHARS,
    SHOWN_MESSAGES,
    TITLE_MAX_CHARS,
)
from core.offline_model import OFFLINE_MODEL_NAME
from core.reply_blocks import BlockSplitter
from core.runs import STALE_AFTER, Run
from core.sessions import ChatbotSession, ChatbotSessionManager
from core.store import COMPLETE, INTERRUPTED, RUNNING, STOPPED, StoredMessage
from core.text import escape_markdown
from core.turns import Token, ToolCall, ToolResult
from pages.common import browser_id, manager_or_stop

SESSION_PARAM = "session"
FRAME = 0.05          # seconds between updates of a streaming reply (at most 20 a second)
IDLE_TICK = 0.25      # seconds between updates while no token arrives
ELSEWHERE_POLL = 1.0  # seconds between looks at a reply written by another replica
UNANSWERED = "No reply was saved for this message (interrupted)."
STATUS_NOTES = {STOPPED: "Stopped by you — partial reply.",
                INTERRUPTED: "Interrupted — partial reply.",
                RUNNING: "Still being written…"}


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
def new_chat_button(manager: ChatbotSessionManager, owner: str) -> None:
    if st.sidebar.button("New chat", icon=":material/add:", use_container_width=True):
        switch_to(manager.create_session(owner=owner))
        st.rerun()


def conversation_list(manager: ChatbotSessionManager, session: ChatbotSession,
                      owner: str) -> None:
    """This browser's conversations, searchable, grouped by when they were last used;
    the open one highlighted."""
    words = st.sidebar.text_input("Search conversations", key="search",
                                  placeholder="Search conversations",
                                  label_visibility="collapsed", icon=":material/search:")
    conversations = manager.list_sessions(owner=owner, limit=50, search=words[:200])
    if not conversations:
        st.sidebar.caption("No conversation matches." if words.strip()
                           else "None yet: send a message to start one.")
    group = None
    for info in conversations:
        when = day_group(info["updated_at"])
        if when != group:
            st.sidebar.caption(when)
            group = when
        current = info["session_id"] == session.session_id
        if st.sidebar.button(escape_markdown(info["title"]) or "Untitled",
                             key=f"open-{info['session_id']}",
                             type="primary" if current else "tertiary",
                             use_container_width=True) and not current:
            resumed = manager.get_session(info["session_id"], owner=owner)
            if resumed is not None:
                switch_to(resumed)
            st.rerun()


def day_group(seconds: float) -> str:
    """Today, Yesterday, Previous 7 days or Older, in the browser's time zone."""
    zone = browser_zone()
    days = (datetime.now(zone).date() - datetime.fromtimestamp(seconds, zone).date()).days
    if days <= 0:
        return "Today"
    if days == 1:
        return "Yesterday"
    return "Previous 7 days" if days <= 7 else "Older"


def browser_zone() -> tzinfo:
    try:
        return ZoneInfo(st.context.timezone or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return timezone.utc


def conversation_actions(manager: ChatbotSessionManager, session: ChatbotSession,
                         owner: str, title: str, has_messages: bool) -> None:
    with st.sidebar.expander("This conversation", icon=":material/edit_note:"):
        new_title = st.text_input("Title", value=title, max_chars=TITLE_MAX_CHARS,
                                  key=f"title-{session.session_id}")
        if st.button("Rename", key="rename", disabled=new_title.strip() in ("", title)):
            manager.rename_session(session, new_title)
            st.rerun()
        def everything():  # read only when a download is clicked, not on every rerun
            return manager.store.load_stored(session.session_id)

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
            prompt = st.text_area("System prompt", value=spec.system_prompt, max_chars=PROMPT_MAX_CHARS)
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


def show_history(rows: list[StoredMessage], last_run: dict | None,
                 session: ChatbotSession, answering: bool = False) -> None:
    """One bubble per user message and one per assistant turn (tool steps, then text),
    each with its time, a copy button and, on replies, the model and feedback.

    A user message left without a reply says why, from the run that answered it; the
    last one is being ``answering`` live below, when it is.
    """
    versions = manager.store.versions(
        session.session_id, [r.id for r in rows if isinstance(r.message, HumanMessage)])
    busy = answering
    results = {r.message.tool_call_id: r.message.text for r in rows
               if isinstance(r.message, ToolMessage)}
    grouped = group_turns(rows)
    for index, turn in enumerate(grouped):
        first = turn[0]
        if isinstance(first.message, HumanMessage):
            with st.chat_message("user"):
                st.text(first.message.text)
                message_footer(first.message.text, first.created_at, before=lambda row=first: (
                    version_switcher(session, row.id, versions.get(row.id), busy),
                    edit_button(session, row, busy)))
                following = grouped[index + 1][0].message if index + 1 < len(grouped) else None
                if isinstance(following, HumanMessage) or (following is None
                                                           and not answering):
                    unanswered_note(first.id, last_run)
            continue
        with st.chat_message("assistant"):
            texts, answer = [], None
            for row in turn:
                message = row.message
                if not isinstance(message, AIMessage):
                    continue
                for call in message.tool_calls:
                    tool_step(call["name"], call["args"], results.get(call["id"]))
                if message.text:
                    st.markdown(message.text)
                    texts.append(message.text)
                    answer = row
                if row.status != COMPLETE:
                    st.caption(STATUS_NOTES.get(row.status, row.status))
            if last_run and last_run["error"] and index == len(grouped) - 1:
                st.error(last_run["error"], icon=":material/error:")
            if answer is not None:
                message_footer("\n\n".join(texts), answer.created_at, answer, session)


def version_switcher(session: ChatbotSession, message_id: int, versions: list[int] | None,
                     busy: bool) -> None:
    """"‹ 2 / 3 ›" on a message that was edited: each version is its own branch."""
    if not versions:
        return
    at = versions.index(message_id)
    st.button("", icon=":material/chevron_left:", key=f"older-{message_id}", type="tertiary",
              disabled=busy or at == 0, help="Previous version",
              on_click=manager.choose_branch, args=(session, versions[at - 1]))
    st.caption(f"{at + 1} / {len(versions)}", width="content")
    st.button("", icon=":material/chevron_right:", key=f"newer-{message_id}",
              type="tertiary", disabled=busy or at == len(versions) - 1, help="Next version",
              on_click=manager.choose_branch,
              args=(session, versions[min(at + 1, len(versions) - 1)]))


def edit_button(session: ChatbotSession, row: StoredMessage, busy: bool) -> None:
    """Edit an earlier message: the chat forks there and the new version is answered."""
    with st.popover("", icon=":material/edit:", help="Edit this message", type="tertiary",
                    disabled=busy):
        key = f"edit-text-{row.id}"
        st.text_area("Edit your message", value=row.message.text, key=key,
                     max_chars=manager.settings.MAX_MESSAGE_CHARS)
        st.button("Send the new version", key=f"edit-send-{row.id}", type="primary",
                  icon=":material/send:", on_click=send_edit, args=(session, row.id, key))


def send_edit(session: ChatbotSession, message_id: int, key: str) -> None:
    try:
        session.edit(message_id, st.session_state.get(key, ""))
    except (MessageRejected, ChatError) as exc:
        st.session_state.edit_refused = str(exc)


def message_footer(text: str, created_at: float, reply: StoredMessage | None = None,
                   session: ChatbotSession | None = None,
                   before: Callable[[], object] | None = None) -> None:
    """Time (and model), a copy button, and feedback on a reply, on one discreet line
    (after what ``before`` draws: a user message's versions and edit button)."""
    with st.container(horizontal=True, vertical_alignment="center", gap="small"):
        if before is not None:
            before()
        with st.popover("", icon=":material/content_copy:", help="Copy as Markdown",
                        type="tertiary"):
            st.code(text, language="markdown", wrap_lines=True)
        if reply is not None and session is not None:
            key = f"feedback-{reply.id}"
            st.feedback("thumbs", key=key, default=reply.score, on_change=save_feedback,
                        args=(session, reply.id, key))
            if reply.score is not None:
                with st.popover("", icon=":material/comment:", type="tertiary",
                                help="Comment on this reply"):
                    with st.form(f"comment-{reply.id}", border=False):
                        comment = st.text_area("Comment (optional)", value=reply.comment,
                                               max_chars=FEEDBACK_COMMENT_CHARS)
                        if st.form_submit_button("Save comment"):
                            manager.set_feedback(session, reply.id, reply.score, comment)
                            st.rerun()
        who = f" · {reply.model}" if reply is not None and reply.model else ""
        st.caption(f"{local_time(created_at)}{who}")


def local_time(seconds: float) -> str:
    """The browser's local time when Streamlit knows its zone, else UTC."""
    when = datetime.fromtimestamp(seconds, browser_zone())
    today = datetime.now(when.tzinfo).date()
    return f"{when:%H:%M}" if when.date() == today else f"{when:%d %b %Y, %H:%M}"


def save_feedback(session: ChatbotSession, message_id: int, key: str) -> None:
    manager.set_feedback(session, message_id, st.session_state.get(key))


def unanswered_note(message_id: int, last_run: dict | None) -> None:
    if last_run is None or last_run["user_message_id"] != message_id:
        st.caption(UNANSWERED)
    elif last_run["status"] == RUNNING:
        st.caption(STATUS_NOTES[RUNNING])
    elif last_run["status"] == STOPPED:
        st.caption("Stopped by you before any reply.")
    elif last_run["error"]:
        st.error(last_run["error"], icon=":material/error:")
    else:
        st.caption(UNANSWERED)


def group_turns(rows: list[StoredMessage]) -> list[list[StoredMessage]]:
    """Split into user messages and the assistant turns between them."""
    turns: list[list[StoredMessage]] = []
    for row in rows:
        is_user = isinstance(row.message, HumanMessage)
        if is_user or not turns or isinstance(turns[-1][0].message, HumanMessage):
            turns.append([row])
        else:
            turns[-1].append(row)
    return turns


def follow(run: Run, session: ChatbotSession) -> None:
    """Show the run live: tool steps, finished blocks once each, the growing tail.

    At most ``1 / FRAME`` updates a second, and only the tail is re-sent, so a long reply
    costs the browser O(length). Leaving (a reload, a closed tab) leaves the run going;
    only the Stop button stops it. When the run ends the page re-runs from the store.
    """
    # Streamlit keeps an element of the previous page run until this run writes over
    # it, and a button drawn where another button was ignored clicks here: shift the
    # bubble by one slot, and keep Stop inside it.
    st.empty()
    with st.chat_message("assistant"):
        steps, blocks, tail, status = st.container(), st.container(), st.empty(), st.empty()
        st.button("Stop", icon=":material/stop_circle:", key=f"stop-{run.id}",
                  on_click=stop_reply, args=(session,))
    st.empty()  # over the previous run's Retry or Regenerate, which cannot apply now
    splitter, calls, seen, started = BlockSplitter(), {}, 0, time.monotonic()
    waiting = True
    while True:
        events, done = run.read(seen, timeout=IDLE_TICK)
        seen += len(events)
        text = ""
        for event in events:
            if isinstance(event, Token):
                text += event.text
            elif isinstance(event, ToolCall):
                calls[event.call_id] = event
            elif isinstance(event, ToolResult):
                call = calls.get(event.call_id)
                with steps:
                    tool_step(event.name, call.args if call else {}, event.content)
        for block in splitter.feed(text):
            blocks.markdown(block)
        if text:
            tail.markdown(splitter.tail)
            if waiting:
                status.empty()
                waiting = False
        elif waiting:  # also lets a click on Stop reach this run of the page
            status.caption(f"Thinking… {time.monotonic() - started:.0f} s")
        if done:
            break
        time.sleep(FRAME)  # coalesce: what streams meanwhile goes out in the next frame
    st.rerun()


def watch_elsewhere(session: ChatbotSession) -> None:
    """A reply written by another replica (or a process that died): show its progress
    from the store and look again shortly; Stop asks its owner to stop."""
    st.button("Stop", icon=":material/stop_circle:", key="stop-button",
              on_click=stop_reply, args=(session,))
    time.sleep(ELSEWHERE_POLL)
    st.rerun()


def stop_reply(session: ChatbotSession) -> None:
    """The Stop button's callback: runs before the page, so the partial is stored first."""
    session.stop()


def request_regenerate() -> None:
    st.session_state.regenerate = True


def start_run(session: ChatbotSession, prompt: str | None) -> tuple[Run | None, str | None]:
    """Store the user's message (or rewind for a regenerate) and start the reply."""
    try:
        if st.session_state.pop("regenerate", False):
            return manager.chat.regenerate(session), None
        if prompt is not None:
            return session.start(prompt), None
    except (MessageRejected, ChatError) as exc:
        return None, str(exc)
    return None, None


def count_page_view(manager: ChatbotSessionManager) -> None:
    if not st.session_state.get("page_counted"):
        st.session_state.page_counted = True
        manager.page_viewed()


EXAMPLES = ("What is 12*7?", "What time is it?", "My name is Ada. What is my name?")
OFFLINE_NOTICE = "offline-demo"


def chat_header(manager: ChatbotSessionManager, session: ChatbotSession, title: str) -> None:
    """Title, then which agent answers (a custom one can be reset in one click)."""
    st.title(escape_markdown(title) or "New chat", anchor=False)
    spec = session.agent_spec or manager.default_spec
    with st.container(horizontal=True, vertical_alignment="center", gap="small"):
        if manager.settings.offline:
            st.badge("offline demo", icon=":material/cloud_off:", color="gray")
        if session.has_custom_agent:
            st.badge(f"custom agent · {spec.model} · temperature {spec.temperature:g}",
                     icon=":material/tune:", color="violet")
            st.button("Reset to shared agent", icon=":material/restart_alt:", type="tertiary",
                      key="header-reset", on_click=reset_agent, args=(session,))
        else:
            st.badge(f"shared pool · {spec.model}", icon=":material/hub:", color="blue")
    if manager.settings.offline and not manager.notice_dismissed(owner, OFFLINE_NOTICE):
        with st.container(border=True):
            st.markdown(":material/cloud_off: **Offline demo mode** — replies come from "
                        "PoolChat's built-in offline model, not an LLM. It can do arithmetic, "
                        "tell the time and remember your name. Set `OPENAI_API_KEY` (and "
                        "`OPENAI_BASE_URL` for Ollama, vLLM or llama.cpp) to chat with a "
                        "real model.")
            st.button("Got it", key="dismiss-offline", type="tertiary",
                      on_click=manager.dismiss_notice, args=(owner, OFFLINE_NOTICE))


def reset_agent(session: ChatbotSession) -> None:
    session.agent = None


def example_prompts() -> None:
    """An empty chat offers prompts that work (the offline model answers all three)."""
    st.caption("Try one of these:")
    with st.container(horizontal=True, gap="small"):
        for text in EXAMPLES:
            st.button(text, key=f"example-{text}", icon=":material/lightbulb:",
                      on_click=choose_example, args=(text,))


def choose_example(text: str) -> None:
    st.session_state.example = text


def keep_refused(prompt: str, refusal: str) -> None:
    """A refused message goes back into the chat box with the reason: nothing to retype."""
    st.session_state.restore = (prompt, refusal)
    st.rerun()


# -- page ----------------------------------------------------------------------------
manager = manager_or_stop()
owner = browser_id()
count_page_view(manager)
session = open_session(manager, owner)
run, refusal = start_run(session, None)  # a Regenerate clicked in the last run
run = run or manager.chat.active_run(session.session_id)
elsewhere = None if run else manager.store.runs.running_run(session.session_id)
if elsewhere is not None and elsewhere["updated_at"] < time.time() - STALE_AFTER:
    manager.chat.sweep()  # its owner died: the reply ends, marked interrupted
    elsewhere = None
if "restore" in st.session_state:
    st.session_state.chat_box, refusal = st.session_state.pop("restore")
prompt = st.chat_input("Message PoolChat", submit_mode="disable", key="chat_box",
                       disabled=run is not None or elsewhere is not None)
prompt = st.session_state.pop("example", None) or prompt
if prompt is not None and run is None and elsewhere is None:
    run, refused = start_run(session, prompt)
    if refused:
        keep_refused(prompt, refused)

stored = manager.store.get_session(session.session_id)
title = stored["title"] if stored else ""
rows = manager.store.load_stored(session.session_id, last=SHOWN_MESSAGES)
last_run = manager.store.runs.latest_run(session.session_id) if rows else None

new_chat_button(manager, owner)
conversation_actions(manager, session, owner, title, has_messages=bool(rows))
agent_settings(manager, session)
conversation_list(manager, session, owner)

chat_header(manager, session, title)
if len(rows) == SHOWN_MESSAGES:
    st.caption(f"Showing the latest {SHOWN_MESSAGES} messages; export to see them all.")
if run is not None:  # its reply streams below, live: history up to its user message
    show_history([r for r in rows if r.id <= run.user_message_id], None, session,
                 answering=True)
    follow(run, session)
else:
    show_history(rows, last_run, session)
refusal = refusal or st.session_state.pop("edit_refused", None)
if refusal:
    st.warning(refusal, icon=":material/block:")
if elsewhere is not None:
    watch_elsewhere(session)
elif rows:
    label = "Retry" if isinstance(rows[-1].message, HumanMessage) else "Regenerate"
    st.button(label, icon=":material/refresh:", key="regenerate-button",
              on_click=request_regenerate)
elif run is None:
    example_prompts()
