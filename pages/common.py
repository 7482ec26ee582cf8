"""What every page shares: the process-wide session manager and the browser's identity."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import streamlit as st

from core.auth import PasswordGate, TooManyGuesses
from core.config import TABLES, ConfigError, Settings, load_settings
from core.ids import is_valid_session_id, new_session_id
from core.runtime import shared_manager
from core.sessions import ChatbotSessionManager

BROWSER_COOKIE = "poolchat_browser"
BROWSER_COOKIE_MAX_AGE = 400 * 24 * 3600
log = logging.getLogger("poolchat")


def _secrets() -> dict[str, Any] | None:
    """Top-level values of ``st.secrets``, or None to let core read the secrets file."""
    try:
        return {k: _plain(v) for k, v in st.secrets.items()
                if not isinstance(v, Mapping) or k in TABLES}
    except Exception:  # no secrets file: Streamlit raises on first access
        return None


def _plain(value: Any) -> Any:
    """st.secrets' tables as plain dicts and lists."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def load_app_settings() -> Settings:
    return load_settings(secrets=_secrets())


@st.cache_resource(show_spinner=False)
def get_manager() -> ChatbotSessionManager:
    """The manager lives in core, outside this cache: a cache clear loses nothing."""
    manager = shared_manager(load_app_settings)
    log.info("session manager attached to Streamlit's resource cache")
    return manager


def manager_or_stop() -> ChatbotSessionManager:
    try:
        return get_manager()
    except ConfigError as exc:
        lines = str(exc).splitlines()
        st.error("Configuration error: " + lines[0] if len(lines) == 1 else
                 "Configuration errors:\n\n" + "\n".join(f"- {line}" for line in lines))
        st.stop()
        raise  # unreachable: st.stop() ends the run


def browser_id() -> str:
    """This browser's random id from its cookie; without cookies, this tab's own id."""
    cookie = st.context.cookies.get(BROWSER_COOKIE)
    if is_valid_session_id(cookie):
        return cookie
    return st.session_state.setdefault("tab_identity", new_session_id())


def stats_unlocked(gate: PasswordGate) -> bool:
    """Ask for the stats password when one is set; remember it for this tab, and for a
    while for the browser's other tabs (its cookie: ``PasswordGate.trusts``)."""
    if gate.open or st.session_state.get("stats_unlocked") or gate.trusts(browser_id()):
        return True
    # a form: the same password can be given again (a text field alone reruns only
    # when its value changes, so after "try again in 3 s" Enter did nothing)
    with st.form("stats-password", border=False):
        given = st.text_input("Stats password", type="password")
        submitted = st.form_submit_button("Unlock", icon=":material/lock_open:")
    if not submitted or not given:
        return False
    try:
        right = gate.check(given, browser=browser_id())
    except TooManyGuesses as busy:
        st.error(f"Too many wrong passwords were tried lately; try again in "
                 f"{math.ceil(busy.retry_after)} s.")
        return False
    if right:
        st.session_state.stats_unlocked = True
        st.rerun()
    log.warning("stats page: a wrong password was given")  # never what was typed
    st.error("Wrong password.")
    return False
