"""The chat page's sidebar: new chat, this conversation's actions and agent settings,
then this browser's conversations, searchable and grouped by day."""

from __future__ import annotations

import time
import zlib
from datetime import datetime

import streamlit as st

from core.agents import AgentSpec
from core.export import conversation_json, conversation_markdown, file_name
from core.limits import PROMPT_MAX_CHARS, TITLE_MAX_CHARS
from core.offline_model import OFFLINE_MODEL_NAME
from core.sessions import ChatbotSession, ChatbotSessionManager
from core.store import RUNNING, StoredMessage
from core.text import escape_markdown
from pages.chat_messages import browser_zone

SESSION_PARAM = "session"


def switch_to(session: ChatbotSession) -> None:
    st.session_state.chat_session = session
    st.query_params[SESSION_PARAM] = session.session_id


def switch_from_sidebar(session: ChatbotSession) -> None:
    """``switch_to`` for a chat chosen in the sidebar: on a phone, the sidebar closes."""
    switch_to(session)
    # new each time: the closing script's container key (drawn where the last run drew
    # one, an element is updated, its script not run again)
    st.session_state[CHAT_CHOSEN] = time.monotonic_ns()



def new_chat_button(manager: ChatbotSessionManager, owner: str) -> None:
    st.sidebar.button("New chat", icon=":material/add:", use_container_width=True,
                      key="new-chat", on_click=start_new_chat, args=(manager, owner))


def start_new_chat(manager: ChatbotSessionManager, owner: str) -> None:
    """A callback, so it runs before the page: a message sent right after the click
    (the same rerun) goes to the new chat, not the one being left."""
    switch_from_sidebar(manager.create_session(owner=owner))


# Runs in the page (a constant). On a phone the sidebar covers the chat: once a chat is
# chosen there, it closes, as a menu does (Streamlit closes it only for page links).
CLOSE_SIDEBAR_ON_PHONE = """<script>
(() => {
  if (!window.matchMedia("(max-width: 768px)").matches) return;
  const sidebar = document.querySelector('[data-testid="stSidebar"]');
  if (!sidebar || sidebar.dataset.collapsed !== "false") return;
  sidebar.querySelector('[data-testid="stSidebarCollapseButton"] button')?.click();
})();
</script>"""
CHAT_CHOSEN = "chat_chosen_in_sidebar"


def close_sidebar_on_phone() -> None:
    """After New chat, a chat opened from the list or a delete: a phone shows the chat."""
    chosen = st.session_state.pop(CHAT_CHOSEN, None)
    if chosen is not None:
        st.sidebar.container(key=f"close-sidebar-{chosen}").html(
            CLOSE_SIDEBAR_ON_PHONE, unsafe_allow_javascript=True)


def open_chat(manager: ChatbotSessionManager, owner: str, session_id: str) -> None:
    """A callback, like ``start_new_chat``: the page runs on the chat chosen."""
    resumed = manager.get_session(session_id, owner=owner)
    if resumed is not None:
        switch_from_sidebar(resumed)


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
        st.sidebar.button(escape_markdown(info["title"]) or "Untitled",
                          key=f"open-{info['session_id']}",
                          type="primary" if current else "tertiary",
                          use_container_width=True, on_click=open_chat,
                          args=(manager, owner, info["session_id"]))


def day_group(seconds: float) -> str:
    """Today, Yesterday, Previous 7 days or Older, in the browser's time zone."""
    zone = browser_zone()
    days = (datetime.now(zone).date() - datetime.fromtimestamp(seconds, zone).date()).days
    if days <= 0:
        return "Today"
    if days == 1:
        return "Yesterday"
    return "Previous 7 days" if days <= 7 else "Older"


def conversation_actions(manager: ChatbotSessionManager, session: ChatbotSession,
                         owner: str, title: str, rows: list[StoredMessage], whole: bool
                         ) -> None:
    """Rename, export, delete. ``rows``: what the page shows (``whole``: all of it)."""
    # keyed by chat: another chat (a new one after Delete, one opened from the list)
    # starts with it closed, not open on the controls of the chat before
    with st.sidebar.expander("This conversation", icon=":material/edit_note:",
                             key=f"conversation-{session.session_id}"):
        # a form: the title typed goes with the click (a button enabled only once the
        # field had been sent lost the first click after typing); keyed by the title
        # too, so a title given meanwhile (the first message's) fills the field
        with st.form(f"rename-{session.session_id}", border=False):
            key = widget_key("title", session, title)
            st.text_input("Title", value=title, max_chars=TITLE_MAX_CHARS, key=key)
            st.form_submit_button("Rename", on_click=rename, args=(manager, session, key,
                                                                   title))
        export_buttons(manager, session, title, rows, whole)
        confirm = st.checkbox("Yes, delete this conversation", key=confirm_key(session))
        st.button("Delete", icon=":material/delete:", disabled=not confirm,
                  on_click=delete_chat, args=(manager, session, owner))


def rename(manager: ChatbotSessionManager, session: ChatbotSession, key: str,
           was: str) -> None:
    """Rename's callback: the title typed in the field as drawn. In the page, a message
    sent with the click had given the chat its first title first, and the field read
    was a new one, drawn from that title: the rename was lost (2 times in 2 in a walk)."""
    title = st.session_state.get(key, "")
    if title.strip() not in ("", was):
        manager.rename_session(session, title)


def export_buttons(manager: ChatbotSessionManager, session: ChatbotSession, title: str,
                   rows: list[StoredMessage], whole: bool) -> None:
    """The chat as Markdown and JSON. A chat the page holds whole goes as a file made now:
    a file made on click (Streamlit's deferred download) is replaced on every rerun, and
    a click that came as a reply ended fetched the replaced one: no file, the button
    spinning for good (a helper's walk, 5 clicks in 8). A longer chat is read on click."""
    if whole:
        markdown, data = conversation_markdown(title, rows), conversation_json(title, rows)
    else:
        def everything():  # read only when a download is clicked, not on every rerun
            return manager.store.load_stored(session.session_id)

        markdown = lambda: conversation_markdown(title, everything())  # noqa: E731
        data = lambda: conversation_json(title, everything())  # noqa: E731
    # the rows are this page run's: a reply being written would be exported as it was
    # when the run began (empty), for the whole of the reply
    writing = any(row.status == RUNNING for row in rows)
    why = "Available once the reply being written has ended." if writing else None
    st.download_button("Export Markdown", markdown, file_name=file_name(title, "md"),
                       mime="text/markdown", icon=":material/download:",
                       disabled=not rows or writing, help=why)
    st.download_button("Export JSON", data, file_name=file_name(title, "json"),
                       mime="application/json", icon=":material/data_object:",
                       disabled=not rows or writing, help=why)


def apply_settings(manager: ChatbotSessionManager, session: ChatbotSession,
                   keys: dict[str, str], offline: bool, drawn: AgentSpec | None) -> None:
    """Save the form, unless the chat's settings changed since it was drawn (another
    tab or window): then the form is drawn again as they are now, and nothing is lost
    of what the other one saved."""
    row = manager.store.get_session(session.session_id)
    stored = row["agent_spec"] if row is not None else None
    if row is not None and session.custom is None and (
            AgentSpec.from_dict(stored) if stored else None) != drawn:
        manager.adopt_settings(session, stored)
        st.session_state.settings_refused = (
            "These settings were changed in another tab or window meanwhile; here they "
            "are now. Change them again if you still want to.")
        typed = st.session_state.get(keys["prompt"], "")
        if typed.strip() and typed != manager.settings_offered(session).system_prompt:
            # a long prompt is not retyped: kept in sight until saved or dismissed (the
            # page is drawn again when a reply ends: a one-time note was gone by then)
            st.session_state.settings_unsaved = {"chat": session.session_id,
                                                 "prompt": typed}
        return
    model = st.session_state.get(keys["model"], "")
    try:
        session.agent = AgentSpec(OFFLINE_MODEL_NAME if offline else model.strip(),
                                  st.session_state.get(keys["prompt"], ""),
                                  st.session_state.get(keys["temperature"], 0.0))
    except ValueError as exc:
        st.session_state.settings_refused = str(exc)
        return
    st.session_state.pop("settings_unsaved", None)  # saved now: nothing left to copy


def use_shared_agent(session: ChatbotSession) -> None:
    session.agent = None


def widget_key(name: str, session: ChatbotSession, shown: str) -> str:
    """A widget's key by chat and by the value it was drawn from: a field left over from
    another chat or from an older value (renamed, settings changed elsewhere) never
    shows; a redraw from the same value keeps what is being typed."""
    return f"{name}-{session.session_id}-{zlib.crc32(shown.encode()):08x}"


def confirm_key(session: ChatbotSession) -> str:
    """The delete box's key, by chat: a box ticked in one chat must not confirm deleting
    another."""
    return f"confirm-delete-{session.session_id}"


def delete_chat(manager: ChatbotSessionManager, session: ChatbotSession, owner: str
                ) -> None:
    """A callback, like ``start_new_chat``: a message sent right after the click goes to
    the new chat, not into the one deleted."""
    manager.delete_session(session.session_id, owner=owner)
    st.session_state.pop(confirm_key(session), None)
    switch_from_sidebar(manager.create_session(owner=owner))


def agent_settings(manager: ChatbotSessionManager, session: ChatbotSession) -> None:
    spec = manager.settings_offered(session)
    offline = manager.settings.offline
    keys = {name: widget_key(f"agent-{name}", session, repr(spec.to_dict()))
            for name in ("model", "prompt", "temperature")}
    with st.sidebar.expander("Agent settings", icon=":material/tune:"):
        if session.has_custom_agent:
            st.caption(f"This chat uses its own agent ({spec.model}).")
        else:
            st.caption(f"This chat uses the shared agent pool ({manager.members.models()}).")
        if not manager.settings.chats_may_have_own_agents and not session.has_custom_agent:
            st.caption("Settings of its own are not offered here: the pool's members "
                       "answer every chat.")  # no key for them: every try would fail
            return
        with st.form("agent-settings", border=False):
            offered = None if offline else manager.custom_models()
            if offered is None:
                st.text_input("Model", value=spec.model, disabled=offline, key=keys["model"],
                              help="Offline demo mode has one model." if offline else None)
            else:  # the operator pays: the models offered, and this chat's own
                choices = list(dict.fromkeys([*offered, spec.model]))
                st.selectbox("Model", choices, index=choices.index(spec.model),
                             key=keys["model"])
            st.text_area("System prompt", value=spec.system_prompt, key=keys["prompt"],
                         max_chars=PROMPT_MAX_CHARS)
            st.slider("Temperature", 0.0, 2.0, float(spec.temperature), 0.1,
                      key=keys["temperature"])
            # a callback, as every click here: it runs before the page, so a request
            # arriving meanwhile carries it (pages/clicks.py) instead of losing it
            st.form_submit_button("Use these settings", on_click=apply_settings,
                                  args=(manager, session, keys, offline, session.agent_spec))
        refused = st.session_state.pop("settings_refused", None)
        if refused:
            st.error(refused)
        unsaved = st.session_state.get("settings_unsaved")
        if unsaved and unsaved["chat"] == session.session_id:
            st.caption("Your system prompt, not saved: the settings were changed in "
                       "another tab. Copy it back to use it.")
            st.code(unsaved["prompt"], language=None, wrap_lines=True)
            st.button("Dismiss", key="settings-unsaved-dismiss", type="tertiary",
                      on_click=st.session_state.pop, args=("settings_unsaved", None))
        if session.has_custom_agent:
            st.button("Reset to shared agent", icon=":material/restart_alt:",
                      on_click=use_shared_agent, args=(session,))


