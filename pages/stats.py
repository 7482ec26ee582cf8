"""The stats page: live aggregates and charts, never message text or session ids."""

from __future__ import annotations

import json

import altair as alt
import pandas as pd
import streamlit as st

from core.runtime import shared_recorder
from core.stats import public_stats
from pages.common import manager_or_stop, stats_unlocked

REFRESH_SECONDS = 5

manager = manager_or_stop()
st.title("PoolChat stats")
if not stats_unlocked(manager.settings.STATS_PASSWORD):
    st.stop()
st.caption(f"Live: refreshes every {REFRESH_SECONDS} s. Aggregates only. "
           "Also served as JSON at `/api/stats.json`.")


def frame(rows: list[dict]) -> pd.DataFrame:
    data = pd.DataFrame(rows)
    if "time" in data:
        data["time"] = pd.to_datetime(data["time"], unit="s")
    return data


def time_chart(data: pd.DataFrame, value: str, series: str, title: str,
               height: int = 200) -> alt.Chart:
    """A line per series over wall-clock time (HH:MM:SS axis)."""
    return alt.Chart(data, title=title, height=height).mark_line(point=len(data) < 40).encode(
        x=alt.X("time:T", title=None, axis=alt.Axis(format="%H:%M:%S")),
        y=alt.Y(f"{value}:Q", title=None),
        color=alt.Color(f"{series}:N", title=None, legend=alt.Legend(orient="bottom")),
        tooltip=["time:T", f"{series}:N", f"{value}:Q"],
    )


@st.fragment(run_every=REFRESH_SECONDS)
def live_stats() -> None:
    stats = public_stats(manager, shared_recorder())
    cols = st.columns(4)
    cols[0].metric("Sessions", stats["total_sessions"])
    cols[1].metric("Messages", stats["total_messages"])
    cols[2].metric("Agent pool size", stats["agent_pool_size"])
    cols[3].metric("Custom-agent sessions", stats["sessions_with_custom_agents"])
    cols = st.columns(4)
    cols[0].metric("Active (5 min)", stats["active_sessions"])
    cols[1].metric("Requests in flight", stats["pool_in_flight"])
    cols[2].metric("Queued", stats["pool_queued"])
    cols[3].metric("Queue time-outs", stats["pool_timeouts"])
    runs = stats["runs"]
    cols = st.columns(4)
    cols[0].metric("Replies being written", stats["runs_in_flight"],
                   help="Runs in flight in this process.")
    cols[1].metric("Replies stopped by users", runs.get("stopped", 0))
    cols[2].metric("Replies interrupted", runs.get("interrupted", 0),
                   help="Provider failures, cut-off streams and crashed processes.")
    cols[3].metric("Page views", stats["page_views"],
                   help="Browser tabs that opened the chat, in this process; a "
                        "conversation counts as a session only once it has a message.")

    series = stats.get("series", {"sessions": [], "pool": []})
    st.subheader("Sessions over time")
    if len(series["sessions"]) < 2:
        st.caption("Collecting samples…")
    else:
        sessions = frame(series["sessions"]).melt("time", var_name="sessions",
                                                  value_name="count")
        st.altair_chart(time_chart(sessions, "count", "sessions", "Sessions", 220))

    st.subheader("Pool utilisation per agent")
    if series["pool"]:
        pool = frame(series["pool"])
        left, right = st.columns(2)
        left.altair_chart(time_chart(pool, "utilisation", "agent",
                                     "In flight / concurrency limit"))
        right.altair_chart(time_chart(pool, "requests", "agent", "Requests per interval"))
        left.altair_chart(time_chart(pool, "queue_wait_ms", "agent", "Mean queue wait (ms)"))
        right.altair_chart(time_chart(pool, "errors", "agent", "Errors per interval"))
    st.dataframe(pd.DataFrame(stats["pool"]), hide_index=True)

    replicas = stats.get("replicas", [])
    if replicas:
        st.subheader("Replicas")
        now = stats["generated_at"]
        st.dataframe(pd.DataFrame([{
            "replica": r["replica"] + (" (this one)" if r["this_replica"] else ""),
            "status": "stopped reporting" if r["stale"] else "live",
            "last seen (s ago)": round(now - r["last_seen"], 1),
            "in flight": r["in_flight"], "served": r["served"], "errors": r["errors"],
            "sessions in memory": r["sessions_in_memory"],
        } for r in replicas]), hide_index=True)

    st.subheader("Custom agents vs the shared pool")
    usage = pd.DataFrame(stats["usage"])
    if usage.empty:
        st.caption("No conversations yet.")
    else:
        usage["label"] = usage["agent"] + " · " + usage["model"]
        shares = usage.groupby("agent")[["sessions", "messages"]].sum()
        shares = (shares / shares.sum().where(lambda s: s > 0, 1) * 100).round(1)
        left, right = st.columns(2)
        left.caption("Share of sessions and assistant messages (%)")
        left.bar_chart(shares, stack=False, height=220)
        right.caption("By model")
        right.bar_chart(usage.set_index("label")[["sessions", "messages"]], stack=False,
                        horizontal=True, height=220)

    st.subheader("Feedback on replies")
    votes = pd.DataFrame(stats["feedback"])
    if votes.empty:
        st.caption("No feedback yet: users rate replies with thumbs up or down.")
    else:
        votes["approval (%)"] = (votes["up"] / (votes["up"] + votes["down"]) * 100).round(1)
        st.dataframe(votes, hide_index=True)

    st.download_button("Download stats (JSON)", json.dumps(stats, indent=2),
                       file_name="poolchat-stats.json", mime="application/json",
                       icon=":material/download:")


live_stats()
