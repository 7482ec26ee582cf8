"""What every page shares: the process-wide session manager, built from configuration."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import streamlit as st

from core.config import ConfigError, load_settings
from core.runtime import shared_manager
from core.sessions import ChatbotSessionManager


def _secrets() -> dict[str, Any] | None:
    """Top-level values of ``st.secrets``, or None to let core read the secrets file."""
    try:
        return {k: v for k, v in st.secrets.items() if not isinstance(v, Mapping)}
    except Exception:  # no secrets file: Streamlit raises on first access
        return None


@st.cache_resource(show_spinner=False)
def get_manager() -> ChatbotSessionManager:
    """The manager lives in core, outside this cache: a cache clear loses nothing."""
    return shared_manager(lambda: load_settings(secrets=_secrets()))


def manager_or_stop() -> ChatbotSessionManager:
    try:
        return get_manager()
    except ConfigError as exc:
        st.error(f"Configuration error: {exc}")
        st.stop()
        raise  # unreachable: st.stop() ends the run
