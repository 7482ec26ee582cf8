"""The stats page: live aggregates and charts, never message text or session ids."""

from __future__ import annotations

import json
import math

import altair as alt
import pandas as pd
import streamlit as st

from core.agents import AgentSpec
from core.limits import MODEL_NAME_MAX_CHARS, PROMPT_MAX_CHARS
from core.members import OWN_ENDPOINT
from core.runtime import shared_recorder
from core.stats import member_rows, public_stats
from pages.common import manager_or_stop, stats_unlocked

REFRESH_SECONDS = 5
POOL_REFRESH_SECONDS = 2
USAGE_MAX_AGE = 1.0  # seconds: every open stats tab shares one usage query a second

manager = manager_or_stop()
st.title("PoolChat stats")
if not stats_unlocked(manager.stats_gate):
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
        # plain decimals with thousands separators: 0, 0.25, 10, 1,500 (not 1e+1)
        y=alt.Y(f"{value}:Q", title=None, axis=alt.Axis(format=",~r")),
        color=alt.Color(f"{series}:N", title=None, legend=alt.Legend(orient="bottom")),
        tooltip=["time:T", f"{series}:N", f"{value}:Q"],
    )


def model_bars(usage: pd.DataFrame) -> alt.Chart:
    """Sessions and replies per agent and model, side by side, labels in full
    (Streamlit's bar chart cut "shared · offline-demo" to "shared · offline-d…")."""
    long = usage.melt(id_vars="label", value_vars=["sessions", "messages"],
                      var_name="count of", value_name="n")
    return alt.Chart(long, height=alt.Step(18)).mark_bar().encode(
        y=alt.Y("label:N", title=None, axis=alt.Axis(labelLimit=0)),
        yOffset="count of:N",
        x=alt.X("n:Q", title=None, axis=alt.Axis(format=",~r", tickMinStep=1)),
        color=alt.Color("count of:N", title=None, legend=alt.Legend(orient="bottom")),
        tooltip=["label:N", "count of:N", "n:Q"],
    )


def money(value: float | None) -> str:
    if value is None:
        return "no price"
    return f"${value:,.2f}" if value >= 1 else f"${value:.6f}".rstrip("0").rstrip(".")


def replies(count: int) -> str:
    return f"{count:,} repl{'y' if count == 1 else 'ies'}"


def seconds(p50: float | None, p95: float | None) -> str:
    return "—" if p50 is None or p95 is None else f"{p50:.2f} / {p95:.2f}"


MEMBER_COLUMNS = {  # wide enough for "failing (key refused) · 299 s" and "model (v2)"
    "Member · model": st.column_config.TextColumn(width=280),
    "State": st.column_config.TextColumn(width=190),
    "Requests": st.column_config.NumberColumn(
        help="Requests this replica sent to the member, failed ones included (see Errors, "
             "429s)"),
}
SPEED_COLUMNS = {"Member": st.column_config.TextColumn(width=280)}


def members_frames(members: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The live pool view as people read it, in two tables narrow enough for a laptop's
    screen beside the sidebar: load and health (this replica's counters), then speed
    (from the replies stored, every replica's). A member is named with its weight (when
    not 1), then its model and version."""
    load = pd.DataFrame([{
        "Member · model": m["member"] + (f" ×{m['weight']:g}" if m["weight"] != 1 else "")
        + f" · {m['model']}" + (f" (v{m['version']})" if m["member"] != OWN_ENDPOINT else ""),
        "State": m["state"] + (f" ({m['failing_for']})" if m["failing_for"] else "")
        + (f" · {math.ceil(m['cooldown_s'])} s" if m["cooldown_s"] else ""),
        "In flight": m["in_flight"], "Requests": m["served"],
        "Errors": m["errors"], "429s": m["rate_limited"],
    } for m in members])
    speed = pd.DataFrame([{
        "Member": m["member"],
        "First token p50 / p95 (s)": seconds(m["ttft_p50_s"], m["ttft_p95_s"]),
        "Reply p50 / p95 (s)": seconds(m["total_p50_s"], m["total_p95_s"]),
        "Tokens per minute": round(m["tokens_per_min"]),
    } for m in members])
    return load, speed


def usage_table(groups: dict[str, dict], label: str) -> pd.DataFrame:
    """One row per group: replies, tokens, cost, latency, errors."""
    return pd.DataFrame([{
        label: key, "replies": g["replies"], "input tokens": g["input_tokens"],
        "output tokens": g["output_tokens"], "cost": money(g["cost"]),
        "first token p50/p95 (s)": seconds(g["ttft_p50"], g["ttft_p95"]),
        "reply p50/p95 (s)": seconds(g["total_p50"], g["total_p95"]),
        "errors": g["errors"],
        "estimated": f"{g['estimated_replies']} of {g['replies']}",
    } for key, g in sorted(groups.items(), key=lambda kv: -kv[1]["tokens"])])


@st.fragment(run_every=POOL_REFRESH_SECONDS)
def pool_view() -> None:
    """Each member live: load, health, cooldown, latency, tokens per minute."""
    queues = manager.members.queues  # the pool, and chats' own settings beside members
    pool = [row for queue in queues for row in queue.snapshot()]  # no database every 2 s
    members = member_rows(pool, manager.get_usage(USAGE_MAX_AGE).get("member", {}))
    st.subheader("Pool members, live")
    cols = st.columns(4)
    cols[0].metric("In flight", sum(m["in_flight"] for m in pool))
    cols[1].metric("Waiting in the queue", sum(queue.queued() for queue in queues))
    cooling = [m["member"] for m in members if m["state"] == "cooling down"]
    cols[2].metric("Cooling down", len(cooling), help="Members whose provider answered 429; "
                   "requests wait for the cooldown or go to other members.")
    cols[3].metric("Failing", sum(m["state"] == "failing" for m in members))
    st.caption(f"Replies being written in this process: {manager.chat.in_flight()} "
               "(custom agents' included; a reply holds a pool slot only while the model "
               "answers).")
    load, speed = members_frames(members)
    st.dataframe(load, hide_index=True, column_config=MEMBER_COLUMNS)
    st.dataframe(speed, hide_index=True, column_config=SPEED_COLUMNS)
    st.caption(f"Refreshes every {POOL_REFRESH_SECONDS} s. Requests, errors and 429s: this "
               "replica's. Latency percentiles: the latest 1,000 replies of each member, "
               "every replica's."
               + (f" *{OWN_ENDPOINT}*: chats with settings of their own, on "
                  "`OPENAI_BASE_URL` (their latency is in the usage tables, as custom "
                  "agents')." if manager.own_endpoint is not None else ""))


@st.fragment(run_every=POOL_REFRESH_SECONDS)
def member_now(name: str, form_version: int) -> None:
    """The member as it is now, live: changed in another window, the page says so
    (the form below still holds the version it was drawn with)."""
    spec, version = manager.members.spec_of(name), manager.pool.member(name).version
    st.caption(f"Now: {spec.model} · temperature {spec.temperature:.1f} · version {version}")
    if version != form_version:
        st.warning(f"{name} was changed in another window (now version {version}); the "
                   f"form below shows version {form_version}.", icon=":material/sync_problem:")
        if st.button("Show the change", key="show_member_change"):
            st.rerun(scope="app")


def reconfigure_form() -> None:
    """Replace a member's model, prompt or temperature: new runs use it at once.

    The fields are the member's at the version this page showed (keyed by both): a page
    whose member was changed meanwhile (another window, another admin) is shown the
    change instead of applying, unnoticed, the old values it still held."""
    st.subheader("Change a member")
    if manager.settings.STATS_PASSWORD is None:
        st.caption("Set `STATS_PASSWORD` to change pool members from this page.")
        return
    names = [m.name for m in manager.pool.members]
    name = st.selectbox("Member", names, key="reconfigure_member")
    spec = manager.members.spec_of(name)
    version = manager.pool.member(name).version
    member_now(name, version)
    with st.form(f"reconfigure:{name}", border=True):
        offline = manager.settings.offline
        field = f"{name}:{version}"
        st.text_input("Model", spec.model, max_chars=MODEL_NAME_MAX_CHARS, disabled=offline,
                      key=f"member_model:{field}",
                      help="Offline demo mode has one model." if offline else None)
        st.text_area("System prompt", spec.system_prompt, max_chars=PROMPT_MAX_CHARS,
                     key=f"member_prompt:{field}")
        st.slider("Temperature", 0.0, 2.0, spec.temperature, 0.1,
                  key=f"member_temperature:{field}")
        st.form_submit_button("Apply", icon=":material/published_with_changes:",
                              on_click=apply_member_change, args=(name, version, spec))
    if (outcome := st.session_state.pop("member_applied", None)) is not None:
        kind, text = outcome
        getattr(st, kind)(text)


def apply_member_change(name: str, version: int, spec: AgentSpec) -> None:
    """Apply's callback, on the form as drawn (``version``, ``spec``): the page's one run
    then shows the outcome. (Applied in the page, with a second run to show it, the
    previous outcome stayed in sight, reading as this one, for one to two seconds.)"""
    st.session_state["member_applied"] = member_change(name, version, spec)


def member_change(name: str, version: int, spec: AgentSpec) -> tuple[str, str]:
    """Apply the form drawn at ``version``; how it went: an ``st`` alert's name, its text."""
    if (now := manager.pool.member(name).version) != version:
        return "warning", (f"{name} was changed meanwhile (now version {now}), in another "
                           "window: the form shows it as it is now. Apply your change again "
                           "if you still want it.")
    field = f"{name}:{version}"
    model, prompt, temperature = (st.session_state[f"member_{part}:{field}"]
                                  for part in ("model", "prompt", "temperature"))
    try:  # the spec it has already changes nothing (core: same version)
        now = manager.members.reconfigure(name, AgentSpec(model.strip(), prompt, temperature))
    except ValueError as exc:
        return "error", str(exc)
    except Exception as exc:  # noqa: BLE001 - the agent could not be built
        return "error", (f"{name} was not changed: the agent could not be built "
                         f"({type(exc).__name__}).")
    if now == version:
        return "info", (f"Nothing to apply: {name} already answers with this model, prompt "
                        "and temperature.")
    new = manager.members.spec_of(name)
    changed = [part for part, differs in (
        (f"model {new.model}", new.model != spec.model),
        ("a new system prompt", new.system_prompt != spec.system_prompt),
        (f"temperature {new.temperature:.1f}", new.temperature != spec.temperature))
        if differs]
    return "success", (f"{name} now answers with {' and '.join(changed)} (version {now}). "
                       "Replies in progress finish on the previous version.")


@st.fragment(run_every=REFRESH_SECONDS)
def live_stats() -> None:
    stats = public_stats(manager, shared_recorder(), usage_max_age=USAGE_MAX_AGE)
    cols = st.columns(4)
    cols[0].metric("Sessions", stats["total_sessions"])
    cols[1].metric("Messages", stats["total_messages"],
                   help="Messages sent and replies, each reply once (its tool steps included).")
    cols[2].metric("Agent pool size", stats["agent_pool_size"])
    cols[3].metric("Custom-agent sessions", stats["sessions_with_custom_agents"])
    runs = stats["runs"]  # (what is in flight or queued now: the live pool view above)
    cols = st.columns(4)
    cols[0].metric("Active (5 min)", stats["active_sessions"],
                   help="Conversations used in the last 5 minutes, in this process "
                        "(a chat with nothing in it yet is not counted, as for Sessions).")
    cols[1].metric("Replies stopped by users", runs.get("stopped", 0))
    cols[2].metric("Replies interrupted", runs.get("interrupted", 0),
                   help="Provider failures, cut-off streams, crashed processes, and "
                        "replies that waited too long for an agent (also counted in "
                        "Queue time-outs).")
    cols[3].metric("Queue time-outs", stats["pool_timeouts"],
                   help="Replies that waited longer than `AGENT_QUEUE_TIMEOUT` for an "
                        "agent, in this process.")
    st.caption(f"Page views: {stats['page_views']:,} (browser tabs that opened the chat, "
               "in this process; a conversation counts as a session only once it has a "
               "message).")

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

    replicas = stats.get("replicas", [])
    if replicas:
        st.subheader("Replicas")
        now = stats["generated_at"]
        st.dataframe(pd.DataFrame([{
            "replica": r["replica"] + (" (this one)" if r["this_replica"] else ""),
            "status": "stopped reporting" if r["stale"] else "live",
            "last seen (s ago)": round(now - r["last_seen"], 1),
            # a replica that stopped reporting writes nothing: what it had then is gone
            "in flight": "—" if r["stale"] else str(r["in_flight"]),
            "requests": r["served"], "errors": r["errors"],
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
        right.caption("By model that answered (a chat answered by two counts under both)")
        right.altair_chart(model_bars(usage))

    st.subheader("Tokens and cost")
    report = stats["token_usage"]
    total = report["total"]
    cols = st.columns(4)
    cols[0].metric("Input tokens", f"{total['input_tokens']:,}")
    cols[1].metric("Output tokens", f"{total['output_tokens']:,}")
    cols[2].metric("Cost", money(total["cost"]), help="From the price table in the "
                   "settings (dollars per million tokens).")
    if 0 < total["unpriced_replies"] < total["replies"]:  # none priced: "no price" says it
        cols[2].caption(f"Not in it: {replies(total['unpriced_replies'])} by models with no "
                        "price in the table.")
    cols[3].metric("Estimated", replies(total["estimated_replies"]),
                   help="Replies whose tokens the model did not report (the offline "
                        "model, or a reply stopped early): counted approximately.")
    if total["replies"]:
        st.caption("Custom agents vs the shared pool")
        st.dataframe(usage_table(report["kind"], "agents"), hide_index=True)
        st.caption("Per model")  # full width: nine columns do not fit in half a page
        st.dataframe(usage_table(report["model"], "model"), hide_index=True)
        st.caption("Per user (anonymised)")
        st.dataframe(usage_table(report["owner"], "user"), hide_index=True)

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


pool_view()
live_stats()
reconfigure_form()
