"""The stats page: aggregates only, never message text or session ids."""

import streamlit as st

from pages.common import manager_or_stop

manager = manager_or_stop()
st.title("PoolChat stats")


@st.fragment(run_every=5)
def live_stats() -> None:
    stats = manager.get_stats()
    cols = st.columns(4)
    cols[0].metric("Sessions", stats["total_sessions"])
    cols[1].metric("Messages", stats["total_messages"])
    cols[2].metric("Agent pool size", stats["agent_pool_size"])
    cols[3].metric("Custom-agent sessions", stats["sessions_with_custom_agents"])
    st.subheader("Pool utilisation")
    st.dataframe(stats["pool"], hide_index=True)


live_stats()
